//! Rebuilds the crate when `data/` changes: the scenario and criteria files are embedded
//! with `include_dir!`, which cargo cannot see on its own.

fn main() {
    println!("cargo:rerun-if-changed=data");
}
