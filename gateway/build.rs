//! `sqlx::migrate!` embeds the migration files at compile time; without this, a new file in
//! `migrations/` would not rebuild the gateway and would silently be left out.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
