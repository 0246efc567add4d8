fn main() {
    let args: Vec<String> = std::env::args().collect();
    std::process::exit(pollen::cli::main(&args));
}
