//! Machine limits for the side-by-side benchmark (bench/run.sh).
//!
//! Usage: `cargo run --release --example machine_limits -- <temp-dir>`
//!
//! Prints three `key=value` lines on stdout (MB = 10^6 bytes):
//!   sha256_single_core_MBps=<n>   sha2 crate (the one berth uses), one thread
//!   durable_write_MBps=<n>        1 GiB written to <temp-dir> then fsync'd
//!   loopback_tcp_MBps=<n>         one TCP stream on 127.0.0.1: 4 GiB written
//!                                 from memory, read into a 1 MiB buffer and
//!                                 dropped (the best a download can do here)
//!
//! These are the ceilings a registry that hashes every blob byte on one core and
//! fsyncs blobs before answering 201 cannot beat for a single upload stream, and
//! that no server can beat for a single download stream.

use std::fs::{File, OpenOptions};
use std::hint::black_box;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

const MB: f64 = 1_000_000.0;

/// Deterministic, incompressible-looking filler (xorshift64*), so neither the
/// hash nor a compressing filesystem gets an easy ride.
fn fill(buf: &mut [u8], mut seed: u64) {
    for chunk in buf.chunks_mut(8) {
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        let v = seed.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
}

/// Hash a 64 MiB buffer over and over for at least `min` and at least 1 GiB.
fn sha256_mbps(min: Duration) -> f64 {
    let mut buf = vec![0u8; 64 << 20];
    fill(&mut buf, 0x9E37_79B9_7F4A_7C15);
    // Warm-up: page in the buffer, let the CPU clock settle.
    let mut h = Sha256::new();
    h.update(&buf);
    black_box(h.finalize());

    let start = Instant::now();
    let mut bytes: u64 = 0;
    let mut h = Sha256::new();
    while start.elapsed() < min || bytes < (1 << 30) {
        h.update(black_box(&buf));
        bytes += buf.len() as u64;
    }
    black_box(h.finalize());
    bytes as f64 / MB / start.elapsed().as_secs_f64()
}

/// Write 1 GiB in 8 MiB writes to a new file in `dir`, fsync it (and the
/// directory entry), and report MB/s over the whole thing.
fn durable_write_mbps(dir: &PathBuf) -> std::io::Result<f64> {
    let path = dir.join(format!("machine_limits.{}.tmp", std::process::id()));
    let mut buf = vec![0u8; 8 << 20];
    fill(&mut buf, 0x2545_F491_4F6C_DD1D);
    let total: u64 = 1 << 30;
    let result = (|| {
        let start = Instant::now();
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        let mut written: u64 = 0;
        let mut seed = 0xD1B5_4A32_D192_ED03u64;
        while written < total {
            // New data per write so nothing can dedupe or compress it away.
            seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
            fill(&mut buf[..4096], seed);
            f.write_all(&buf)?;
            written += buf.len() as u64;
        }
        f.sync_all()?;
        File::open(dir)?.sync_all()?;
        Ok(written as f64 / MB / start.elapsed().as_secs_f64())
    })();
    let _ = std::fs::remove_file(&path);
    result
}

/// One TCP stream over loopback: a thread writes 4 GiB from a 4 MiB buffer,
/// this one reads it into a 1 MiB buffer; MB/s from the connection to the
/// last byte read. The best of three, as the machine is noisy.
fn loopback_tcp_mbps() -> std::io::Result<f64> {
    let total: u64 = 4 << 30;
    let mut best = 0f64;
    for _ in 0..3 {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let writer = std::thread::spawn(move || -> std::io::Result<()> {
            let mut buf = vec![0u8; 4 << 20];
            fill(&mut buf, 0x9E37_79B9_7F4A_7C15);
            let mut s = TcpStream::connect(addr)?;
            let mut sent = 0u64;
            while sent < total {
                s.write_all(&buf)?;
                sent += buf.len() as u64;
            }
            Ok(())
        });
        let (mut conn, _) = listener.accept()?;
        let start = Instant::now();
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0u64;
        while got < total {
            match conn.read(&mut buf)? {
                0 => break,
                n => got += n as u64,
            }
        }
        let secs = start.elapsed().as_secs_f64();
        writer
            .join()
            .map_err(|_| std::io::Error::other("writer panicked"))??;
        best = best.max(got as f64 / MB / secs);
    }
    Ok(best)
}

fn main() {
    let dir = match std::env::args_os().nth(1) {
        Some(d) => PathBuf::from(d),
        None => {
            eprintln!("usage: machine_limits <temp-dir>");
            std::process::exit(2);
        }
    };
    let sha = sha256_mbps(Duration::from_secs(2));
    println!("sha256_single_core_MBps={sha:.0}");
    match durable_write_mbps(&dir) {
        Ok(w) => println!("durable_write_MBps={w:.0}"),
        Err(e) => {
            eprintln!("durable write test in {} failed: {e}", dir.display());
            std::process::exit(1);
        }
    }
    match loopback_tcp_mbps() {
        Ok(t) => println!("loopback_tcp_MBps={t:.0}"),
        Err(e) => {
            eprintln!("loopback TCP test failed: {e}");
            std::process::exit(1);
        }
    }
}
