//! spalloc-replay (being written).
fn main() {
    eprintln!("spalloc-replay: not built yet");
    std::process::exit(2);
}
