//! A raw MQTT client on our own codec over a blocking socket: every packet
//! id, flag and property in the test's hands.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use testament::codec::{Decoder, Encode as _, Packet, ProtocolVersion};

pub struct Raw {
    pub stream: TcpStream,
    pub version: ProtocolVersion,
    decoder: Decoder,
}

impl Raw {
    /// A connection to `addr`; each read waits at most `timeout`.
    pub fn open(addr: SocketAddr, version: ProtocolVersion, timeout: Duration) -> Self {
        let stream = TcpStream::connect(addr).unwrap();
        Self::over(stream, version, timeout)
    }

    pub fn over(stream: TcpStream, version: ProtocolVersion, timeout: Duration) -> Self {
        stream.set_read_timeout(Some(timeout)).unwrap();
        stream.set_nodelay(true).unwrap();
        Self {
            stream,
            version,
            decoder: Decoder::new(1 << 20).with_version(version),
        }
    }

    /// Sends `p`; `false` once the connection is gone.
    pub fn send(&mut self, p: Packet) -> bool {
        self.stream
            .write_all(&p.to_vec(self.version).unwrap())
            .is_ok()
    }

    /// The next packet; `None` when the connection ended or the read timed
    /// out.
    pub fn next(&mut self) -> Option<Packet> {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(p) = self.decoder.decode().ok()? {
                return Some(p);
            }
            match self.stream.read(&mut buf) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.decoder.feed(&buf[..n]),
            }
        }
    }
}
