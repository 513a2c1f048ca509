// The quick start's query: @libsql/client, configured from `kubectl tenantdb connect`'s
// environment lines (LIBSQL_URL, LIBSQL_AUTH_TOKEN), as any application would be.
import { createClient } from "@libsql/client";

const client = createClient({ url: process.env.LIBSQL_URL, authToken: process.env.LIBSQL_AUTH_TOKEN });
await client.execute("CREATE TABLE IF NOT EXISTS greetings (msg TEXT)");
await client.execute({ sql: "INSERT INTO greetings VALUES (?)", args: ["hello from TenantDB"] });
const result = await client.execute("SELECT msg, count(*) AS n FROM greetings");
console.log(`${process.env.LIBSQL_URL} answered through @libsql/client:`);
console.table(result.rows.map((r) => ({ msg: r.msg, n: r.n })));
client.close();
