//! puppetcam binary entry point: a thin shell that maps errors to exit codes.
fn main() {}
