//! spalloc-bench (being written).
fn main() {
    eprintln!("spalloc-bench: not built yet");
    std::process::exit(2);
}
