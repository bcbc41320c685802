//! The fuzzers' short pass for CI (stable Rust, no cargo-fuzz): every file of
//! fuzz/corpus/<target>/ goes through the same parser as its fuzz target (fuzz/fuzz_targets/), then
//! a deterministic mutation pass (xorshift RNG: bit flips, byte sets, boundary integers,
//! truncations, insertions, deletions, duplications, splices of two corpus files, dictionary
//! tokens; for `.pcav`, mutations inside the JSON header with its length fixed up) feeds 200 000
//! more inputs per target (50 000 in a debug build; ~5-10 s either way on 2 cores), half of them
//! grown from the valid files. Errors are fine; a panic fails the test, names the input and
//! writes it to the test's temporary directory for `cargo fuzz run <target> <file>`.
//! `PUPPETCAM_FUZZ_ITERS` changes the number of mutants per target (default below); the image
//! libraries' complaints go to target/tmp/fuzz_corpus-stderr.log rather than the terminal.
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Mutants per target by default (release; a debug build, as `cargo test` makes, runs a quarter).
const DEFAULT_ITERS: usize = 200_000;

/// While any test here runs, file descriptor 2 goes to a log file: libpng, libjpeg and OpenCV
/// print a line to stderr for each broken image they refuse (tens of thousands here), which would
/// bury the test output. Rust's own output is captured by the test harness as usual.
struct QuietStderr;

static QUIET: std::sync::Mutex<(usize, i32)> = std::sync::Mutex::new((0, -1));

fn quiet_stderr() -> QuietStderr {
    let mut q = QUIET.lock().unwrap();
    if q.0 == 0 {
        let log = std::ffi::CString::new(format!("{}/fuzz_corpus-stderr.log", env!("CARGO_TARGET_TMPDIR"))).unwrap();
        // SAFETY: plain descriptor calls; the saved descriptor is restored by the last guard.
        unsafe {
            // Each run starts the log afresh.
            static FRESH: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);
            let start = if FRESH.swap(false, std::sync::atomic::Ordering::Relaxed) { libc::O_TRUNC } else { 0 };
            let fd = libc::open(log.as_ptr(), libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND | start | libc::O_CLOEXEC, 0o644);
            if fd >= 0 {
                q.1 = libc::dup(2);
                libc::dup2(fd, 2);
                libc::close(fd);
            }
        }
    }
    q.0 += 1;
    QuietStderr
}

impl Drop for QuietStderr {
    fn drop(&mut self) {
        let mut q = QUIET.lock().unwrap();
        q.0 -= 1;
        if q.0 == 0 && q.1 >= 0 {
            // SAFETY: as above.
            unsafe {
                libc::dup2(q.1, 2);
                libc::close(q.1);
            }
            q.1 = -1;
        }
    }
}

fn pcav(b: &[u8]) -> bool {
    puppetcam::avatar::WarpAvatar::from_bytes(b, Path::new("fuzz.pcav")).is_ok()
}

fn profile(b: &[u8]) -> bool {
    puppetcam::calibrate::Profile::from_toml(&String::from_utf8_lossy(b)).is_ok()
}

fn config(b: &[u8]) -> bool {
    puppetcam::config::Config::from_toml(&String::from_utf8_lossy(b)).is_ok()
}

fn image(b: &[u8]) -> bool {
    let probed = puppetcam::imageio::probe(b);
    let decoded = puppetcam::imageio::decode_bounded(b, puppetcam::imageio::INPUT);
    // Whatever decodes was probed first, and to the size it decoded to (or, JPEG, turned).
    if let Ok(f) = &decoded {
        let p = probed.expect("decoded without a probe");
        assert!((f.width, f.height) == (p.width, p.height) || (f.width, f.height) == (p.height, p.width));
    }
    decoded.is_ok()
}

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} is empty", dir.display());
    files.into_iter().map(|p| (p.clone(), std::fs::read(&p).unwrap())).collect()
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    /// Uniform-ish in 0..n (n > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// Small numbers more often than large ones (lengths of ranges).
    fn len(&mut self, max: usize) -> usize {
        let cap = [4, 16, 256, max.max(1)][self.below(4)].min(max.max(1));
        1 + self.below(cap)
    }
}

/// Tokens the parsers care about, inserted or overwritten at random places.
const DICT: &[&[u8]] = &[
    b"\"", b"[", b"]", b"{", b"}", b"=", b",", b":", b".", b"\n", b"[[", b"]]", b"\\u0000", b"'''", b"\"\"\"", b"#", b"nan", b"-inf",
    b"1e400", b"-1", b"0", b"4294967296", b"18446744073709551616", b"9223372036854775807", b"-0.0", b"null", b"true", b"[]", b"{}",
    b"\"offset\":", b"\"len\":", b"\"width\":", b"\"height\":", b"\"triangles\":", b"\"depth\":", b"\"iris\":", b"\"refiner\":",
    b"schema = 1", b"neutral_pts68", b"[service]", b"bind = \"", b"[face.one_euro]", b"[[source]]", b"kind = \"file\"",
    b"IHDR", b"IDAT", b"IEND", b"PLTE", b"\xFF\xC0", b"\xFF\xC2", b"\xFF\xC4", b"\xFF\xDA", b"\xFF\xD9", b"\xFF\xE1", b"\xFF\xFF",
    b"RIFF", b"WEBP", b"VP8 ", b"VP8L", b"VP8X", b"BM", b"PCAVATAR",
];
const INTS: &[u32] = &[0, 1, 2, 0x7F, 0x80, 0xFF, 0x100, 0x3FFF, 0x4000, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 4096, 4097, 16384, 16385, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF];

fn mutate_bytes(rng: &mut XorShift, v: &mut Vec<u8>, others: &[(PathBuf, Vec<u8>)]) {
    let n = v.len();
    match rng.below(11) {
        0 if n > 0 => {
            let i = rng.below(n);
            v[i] ^= 1 << rng.below(8);
        }
        1 if n > 0 => {
            let i = rng.below(n);
            v[i] = rng.next() as u8;
        }
        2 if n >= 4 => {
            let x = INTS[rng.below(INTS.len())];
            let bytes = if rng.below(2) == 0 { x.to_le_bytes() } else { x.to_be_bytes() };
            let w = [1, 2, 4][rng.below(3)];
            let i = rng.below(n - w + 1);
            let src = if bytes[0] == 0 && w < 4 { &bytes[4 - w..] } else { &bytes[..w] };
            v[i..i + w].copy_from_slice(src);
        }
        3 if n > 0 => v.truncate(rng.below(n)),
        4 => {
            let i = rng.below(n + 1);
            let k = rng.len(64);
            let ins: Vec<u8> = (0..k).map(|_| rng.next() as u8).collect();
            v.splice(i..i, ins);
        }
        5 if n > 0 => {
            let i = rng.below(n);
            let k = rng.len(n - i);
            v.drain(i..(i + k).min(n));
        }
        6 if n > 0 => {
            let i = rng.below(n);
            let k = rng.len(n - i).min(n - i);
            let chunk = v[i..i + k].to_vec();
            let at = rng.below(n + 1);
            v.splice(at..at, chunk);
        }
        7 if !others.is_empty() => {
            // Splice: a prefix of this one and a suffix of another.
            let o = &others[rng.below(others.len())].1;
            let cut = rng.below(n + 1);
            let from = rng.below(o.len() + 1);
            v.truncate(cut);
            v.extend_from_slice(&o[from..]);
        }
        8 | 9 => {
            let tok = DICT[rng.below(DICT.len())];
            let i = rng.below(n + 1);
            if rng.below(2) == 0 || i + tok.len() > n {
                v.splice(i..i, tok.iter().copied());
            } else {
                v[i..i + tok.len()].copy_from_slice(tok);
            }
        }
        _ if n > 0 => {
            // Replace a run of digits (numbers in text and in JSON) by an extreme one.
            let i = rng.below(n);
            if let Some(s) = v[i..].iter().position(|c| c.is_ascii_digit()).map(|s| s + i) {
                let e = v[s..].iter().position(|c| !c.is_ascii_digit()).map_or(n, |e| e + s);
                let num: &[u8] = [&b"0"[..], b"65535", b"4097", b"99999999999", b"1e39", b"0.000001", b"-7"][rng.below(7)];
                v.splice(s..e, num.iter().copied());
            }
        }
        _ => v.push(rng.next() as u8),
    }
}

/// For a `.pcav`: mutate inside the JSON header and fix the header length, so that mutants get
/// past the length check into the header and blob-table validation.
fn mutate_pcav_header(rng: &mut XorShift, v: &mut Vec<u8>, others: &[(PathBuf, Vec<u8>)]) -> bool {
    if v.len() < 16 || &v[..8] != b"PCAVATAR" {
        return false;
    }
    let hlen = u32::from_le_bytes(v[12..16].try_into().unwrap()) as usize;
    if 16 + hlen > v.len() {
        return false;
    }
    let mut header = v[16..16 + hlen].to_vec();
    for _ in 0..1 + rng.below(3) {
        mutate_bytes(rng, &mut header, others);
    }
    let mut out = v[..12].to_vec();
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&v[16 + hlen..]);
    *v = out;
    true
}

/// Prints the first few panics in full and counts the rest silently (a broken parser can panic on
/// thousands of mutants; their backtraces would bury the summary).
fn quiet_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        let seen = std::sync::atomic::AtomicUsize::new(0);
        std::panic::set_hook(Box::new(move |info| {
            let msg = info.payload().downcast_ref::<String>().map(String::as_str).or(info.payload().downcast_ref::<&str>().copied());
            // The summary assertions below always print.
            if seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < 3 || msg.is_some_and(|m| m.contains(" panics:\n") || m.contains("no corpus file")) {
                default(info);
            }
        }));
    });
}

fn run_target(target: &str, f: fn(&[u8]) -> bool, seed: u64) {
    quiet_panics();
    let files = corpus(target);
    let default = if cfg!(debug_assertions) { DEFAULT_ITERS / 4 } else { DEFAULT_ITERS };
    let iters = std::env::var("PUPPETCAM_FUZZ_ITERS").ok().and_then(|s| s.parse().ok()).unwrap_or(default);
    let quiet = quiet_stderr();
    let t0 = Instant::now();
    let mut failures: Vec<String> = Vec::new();
    let mut panics = 0;
    let mut fail = |what: String, input: &[u8]| {
        panics += 1;
        if failures.len() < 5 {
            let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("fuzz_corpus-{target}-{}", failures.len()));
            std::fs::write(&out, input).unwrap();
            failures.push(format!("{what} (input written to {})", out.display()));
        }
    };
    // (a) The corpus itself.
    let mut valid = Vec::new();
    for (k, (p, b)) in files.iter().enumerate() {
        match catch_unwind(AssertUnwindSafe(|| f(b))) {
            Ok(good) => {
                if good {
                    valid.push(k);
                }
            }
            Err(_) => fail(format!("corpus file {} panicked", p.display()), b),
        }
    }
    // The seeds are valid files; half the mutants start from one, so that they get past the
    // first checks (a minimised corpus is mostly inputs that each fail somewhere different).
    assert!(!valid.is_empty(), "{target}: no corpus file parses; the mutation pass would only test the first checks");
    let ok = valid.len();
    // (b) Deterministic mutants of the corpus.
    let mut rng = XorShift(seed);
    let mut accepted = 0;
    for it in 0..iters {
        let base = if rng.below(2) == 0 { valid[rng.below(valid.len())] } else { rng.below(files.len()) };
        let mut v = files[base].1.clone();
        let structured = target == "pcav" && rng.below(2) == 0 && mutate_pcav_header(&mut rng, &mut v, &files);
        if !structured {
            for _ in 0..1 + rng.below(4) {
                mutate_bytes(&mut rng, &mut v, &files);
            }
        }
        match catch_unwind(AssertUnwindSafe(|| f(&v))) {
            Ok(good) => accepted += usize::from(good),
            Err(_) => fail(format!("mutant {it} of {} (seed {seed:#x}) panicked", files[base].0.display()), &v),
        }
    }
    drop(quiet);
    println!("{target}: {} corpus files ({ok} valid), {iters} mutants ({accepted} valid) in {:.1?}", files.len(), t0.elapsed());
    assert!(failures.is_empty(), "{target}: {panics} panics:\n{}", failures.join("\n"));
}

#[test]
fn pcav_corpus_and_mutants() {
    run_target("pcav", pcav, 0x9E37_79B9_7F4A_7C15);
}

#[test]
fn profile_corpus_and_mutants() {
    run_target("profile", profile, 0xD1B5_4A32_D192_ED03);
}

#[test]
fn config_corpus_and_mutants() {
    run_target("config", config, 0x8CB9_2BA7_2F3D_8DD7);
}

#[test]
fn image_corpus_and_mutants() {
    run_target("image", image, 0x2545_F491_4F6C_DD1D);
}
