//! The SQL migrations are compiled into the binary (`sqlx::migrate!`); rebuild when any of them
//! is added, changed or removed (cargo does not watch those files otherwise).
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
