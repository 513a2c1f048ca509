// A small application on a TenantDB database: Drizzle ORM over @libsql/client, configured
// from the PluggableDatabase's connection Secret (envFrom: LIBSQL_URL, LIBSQL_AUTH_TOKEN).
// It migrates, inserts, queries and runs a transaction, printing key=value lines.
import { createClient } from "@libsql/client/http";
import { drizzle } from "drizzle-orm/libsql/http";
import { migrate } from "drizzle-orm/libsql/migrator";
import { sqliteTable, integer, text } from "drizzle-orm/sqlite-core";
import { eq, sql } from "drizzle-orm";
import { fileURLToPath } from "node:url";

const orders = sqliteTable("orders", {
  id: integer("id").primaryKey({ autoIncrement: true }),
  customer: text("customer").notNull(),
  cents: integer("cents").notNull(),
  status: text("status").notNull().default("open"),
});

const url = process.env.LIBSQL_URL;
const authToken = process.env.LIBSQL_AUTH_TOKEN;
if (!url) throw new Error("LIBSQL_URL is not set (mount the PluggableDatabase's Secret with envFrom)");

const client = createClient({ url, authToken });
const db = drizzle(client);
try {
  await migrate(db, { migrationsFolder: fileURLToPath(new URL("./migrations", import.meta.url)) });
  console.log("migrated=ok");
  await db.insert(orders).values([
    { customer: "ada", cents: 1250 },
    { customer: "ada", cents: 999 },
    { customer: "bob", cents: 4200 },
  ]);
  const ada = await db.select().from(orders).where(eq(orders.customer, "ada"));
  console.log(`ada_orders=${ada.length}`);
  await db.transaction(async (tx) => {
    await tx.update(orders).set({ status: "paid" }).where(eq(orders.customer, "ada"));
    const [{ open }] = await tx
      .select({ open: sql`count(*)`.mapWith(Number) })
      .from(orders)
      .where(eq(orders.status, "open"));
    console.log(`open_in_tx=${open}`);
  });
  try {
    await db.transaction(async (tx) => {
      await tx.delete(orders).where(eq(orders.customer, "bob"));
      throw new Error("changed my mind");
    });
  } catch (e) {
    console.log(`rolled_back=${e.message === "changed my mind"}`);
  }
  const [{ total }] = await db.select({ total: sql`sum(${orders.cents})`.mapWith(Number) }).from(orders);
  console.log(`total_cents=${total}`);
  console.log("result=ok");
} catch (e) {
  // Drizzle wraps the driver's error ("Failed query: …"); the cause names what happened.
  let root = e;
  while (root.cause) root = root.cause;
  console.log(`result=error`);
  console.log(`error=${root.code ?? ""} ${root.message}`);
  process.exitCode = 1;
} finally {
  client.close();
}
