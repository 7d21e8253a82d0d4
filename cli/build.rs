//! Rebuilds the `quiver` binary when the plugin project templates it embeds change: include_dir!
//! cannot tell cargo about the files it reads on stable Rust.

fn main() {
    println!("cargo:rerun-if-changed=templates");
    println!("cargo:rerun-if-changed=../wit/quiver-plugin.wit");
}
