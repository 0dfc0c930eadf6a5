fn main() {
    // embed_migrations! reads the SQL at compile time; rebuild when it changes.
    println!("cargo:rerun-if-changed=sql");
}
