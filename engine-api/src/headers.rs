//! Header names of the engine's admin API.

/// Header carrying an archive's sha256 on download.
pub const SHA256_HEADER: &str = "x-tenantdb-sha256";
/// Header carrying the database an archive came from on download.
pub const DATABASE_HEADER: &str = "x-tenantdb-database";
