fn main() {
    println!("pulse-metrics {}", env!("CARGO_PKG_VERSION"));
}
