// Rebuild when a migration, a default rule or a template changes: they are
// compiled into the binary (and into tests/pg_schema.rs, through
// `sqlx::migrate!`, which does not tell Cargo about the files it reads).
// Cargo scans a directory recursively; both migrators are named anyway, so
// that neither is lost if the parent line ever goes.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-changed=migrations/sqlite");
    println!("cargo:rerun-if-changed=migrations/postgres");
    println!("cargo:rerun-if-changed=rules");
    println!("cargo:rerun-if-changed=templates");
}
