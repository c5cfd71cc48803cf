//! The `testament` command.
//!
//! For now it offers the wire layer as a debugging tool: `testament decode`
//! reads an MQTT byte stream (raw or hex) and prints each packet, or the
//! fault and the reason code it earns. The broker itself (`serve`) comes with
//! the drivers.

use std::io::Read;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use testament::codec::{Decoder, ProtocolVersion};

#[derive(Parser)]
#[command(
    name = "testament",
    version,
    about = "MQTT broker core with explicit auth for the Last Will"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Decode an MQTT byte stream (client or server side) and print its packets.
    Decode {
        /// Protocol version of the stream; by default a CONNECT sets it.
        #[arg(long, value_enum)]
        protocol: Option<Protocol>,
        /// Input is hex text (whitespace ignored) rather than raw bytes.
        #[arg(long)]
        hex: bool,
        /// Largest packet accepted, in bytes.
        #[arg(long, default_value_t = 1 << 20)]
        max_packet_size: u32,
        /// File to read; standard input when absent.
        file: Option<std::path::PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Protocol {
    #[value(name = "3.1.1")]
    V311,
    #[value(name = "5")]
    V5,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Decode {
            protocol,
            hex,
            max_packet_size,
            file,
        } => match decode(protocol, hex, max_packet_size, file) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
    }
}

fn decode(
    protocol: Option<Protocol>,
    hex: bool,
    max_packet_size: u32,
    file: Option<std::path::PathBuf>,
) -> Result<ExitCode, String> {
    let mut raw = Vec::new();
    match &file {
        Some(path) => raw = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?,
        None => {
            std::io::stdin()
                .read_to_end(&mut raw)
                .map_err(|e| format!("stdin: {e}"))?;
        }
    }
    let bytes = if hex { parse_hex(&raw)? } else { raw };
    let mut decoder = Decoder::new(max_packet_size);
    match protocol {
        Some(Protocol::V311) => decoder.set_version(ProtocolVersion::V311),
        Some(Protocol::V5) => decoder.set_version(ProtocolVersion::V5),
        None => {}
    }
    decoder.feed(&bytes);
    loop {
        match decoder.decode() {
            Ok(Some(packet)) => println!("{packet:?}"),
            Ok(None) if decoder.buffered() == 0 => return Ok(ExitCode::SUCCESS),
            Ok(None) => {
                println!(
                    "incomplete: {} bytes of a frame left over",
                    decoder.buffered()
                );
                return Ok(ExitCode::FAILURE);
            }
            Err(e) => {
                println!("error: {e} (reason code {})", e.reason_code());
                return Ok(ExitCode::FAILURE);
            }
        }
    }
}

fn parse_hex(text: &[u8]) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = text
        .iter()
        .copied()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    if !digits.len().is_multiple_of(2) {
        return Err("odd number of hex digits".into());
    }
    digits
        .chunks(2)
        .map(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|s| u8::from_str_radix(s, 16).ok())
                .ok_or_else(|| format!("not hex: {}", String::from_utf8_lossy(pair)))
        })
        .collect()
}
