//! MQTT over WebSockets (MQTT 5.0 §6, 3.1.1 §6): one connection's
//! WebSocket layer between the socket's bytes and the hub's, the same for
//! every driver (the runner holds it). tungstenite does the protocol — the
//! HTTP upgrade, frames, masking, ping and close — over an in-memory stream
//! the runner fills with what the socket read and empties into what it
//! writes, so nothing here waits on a socket.
//!
//! The upgrade must ask for the configured path and offer the `mqtt`
//! subprotocol, which the answer selects [MQTT-6.0.0-3], [MQTT-6.0.0-4].
//! MQTT travels in binary frames, a packet across frames or frames across
//! packets as they come [MQTT-6.0.0-2]; a text frame closes the connection
//! [MQTT-6.0.0-1].

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};

use tungstenite::handshake::server::{ErrorResponse, Request, Response, ServerHandshake};
use tungstenite::handshake::{HandshakeError, MidHandshake};
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Message, WebSocket};

/// What the socket read, not taken yet, and what is to be written.
#[derive(Debug, Default)]
struct Pipe {
    input: VecDeque<u8>,
    output: Vec<u8>,
}

impl Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.input.is_empty() {
            return Err(ErrorKind::WouldBlock.into());
        }
        self.input.read(buf)
    }
}

impl Write for Pipe {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Checks the upgrade request: its path, and the `mqtt` subprotocol.
#[derive(Debug)]
struct Upgrade {
    path: std::sync::Arc<str>,
}

impl tungstenite::handshake::server::Callback for Upgrade {
    fn on_request(
        self,
        request: &Request,
        mut response: Response,
    ) -> Result<Response, ErrorResponse> {
        let refuse = |status: u16, why: &str| {
            let mut r = ErrorResponse::new(Some(why.to_owned()));
            *r.status_mut() = tungstenite::http::StatusCode::from_u16(status)
                .unwrap_or(tungstenite::http::StatusCode::BAD_REQUEST);
            r
        };
        if request.uri().path() != &*self.path {
            return Err(refuse(404, "MQTT is served on another path"));
        }
        let offers_mqtt = request
            .headers()
            .get_all("Sec-WebSocket-Protocol")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim() == "mqtt");
        if !offers_mqtt {
            return Err(refuse(400, "the subprotocol mqtt is required"));
        }
        response.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            tungstenite::http::HeaderValue::from_static("mqtt"),
        );
        Ok(response)
    }
}

enum State {
    Upgrading(Box<MidHandshake<ServerHandshake<Pipe, Upgrade>>>),
    Open(Box<WebSocket<Pipe>>),
    Ended,
}

/// One connection's WebSocket layer.
pub(crate) struct WsConn {
    state: State,
}

impl std::fmt::Debug for WsConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WsConn")
    }
}

/// What bytes from the socket gave.
#[derive(Debug, Default)]
pub(crate) struct Received {
    /// The MQTT bytes they carried.
    pub mqtt: Vec<u8>,
    /// What to write back (the upgrade's answer, a pong, a close).
    pub reply: Vec<u8>,
    /// The connection ends, and why (`Ok`: the client closed it).
    pub end: Option<Result<&'static str, String>>,
}

impl WsConn {
    /// A connection waiting for its upgrade request on `path`; frames and
    /// messages bounded by `max_message` bytes (the largest MQTT packet).
    pub(crate) fn new(path: std::sync::Arc<str>, max_message: usize) -> Self {
        let config = WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(0)
            .max_message_size(Some(max_message))
            .max_frame_size(Some(max_message));
        let start = ServerHandshake::start(Pipe::default(), Upgrade { path }, Some(config));
        Self {
            state: State::Upgrading(Box::new(start)),
        }
    }

    /// Bytes the socket read.
    pub(crate) fn receive(&mut self, data: &[u8]) -> Received {
        let mut got = Received::default();
        match std::mem::replace(&mut self.state, State::Ended) {
            State::Upgrading(mut mid) => {
                mid.get_mut().get_mut().input.extend(data);
                match (*mid).handshake() {
                    Ok(ws) => {
                        self.state = State::Open(Box::new(ws));
                        // The answer, and what came after the request.
                        self.read_frames(&mut got);
                    }
                    Err(HandshakeError::Interrupted(mid)) => {
                        self.state = State::Upgrading(Box::new(mid));
                    }
                    Err(HandshakeError::Failure(e)) => {
                        // A refused upgrade hands its answer back in the
                        // error: written here, then the connection ends.
                        if let tungstenite::Error::Http(response) = &e {
                            let body = String::from_utf8_lossy(
                                response.body().as_deref().unwrap_or_default(),
                            );
                            got.reply = format!(
                                "HTTP/1.1 {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                                response.status(),
                                body.len()
                            )
                            .into_bytes();
                        }
                        got.end = Some(Err(format!("WebSocket upgrade refused: {e}")));
                    }
                }
            }
            State::Open(mut ws) => {
                ws.get_mut().input.extend(data);
                self.state = State::Open(ws);
                self.read_frames(&mut got);
            }
            State::Ended => {}
        }
        got
    }

    fn read_frames(&mut self, got: &mut Received) {
        let State::Open(ws) = &mut self.state else {
            return;
        };
        loop {
            match ws.read() {
                Ok(Message::Binary(b)) => got.mqtt.extend_from_slice(&b),
                Ok(Message::Text(_)) => {
                    got.end = Some(Err(
                        "a text frame: MQTT travels in binary frames [MQTT-6.0.0-1]".to_owned(),
                    ));
                    break;
                }
                Ok(Message::Close(_)) => {
                    got.end = Some(Ok("the client closed the WebSocket"));
                    break;
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => break,
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    got.end = Some(Ok("the client closed the WebSocket"));
                    break;
                }
                Err(e) => {
                    got.end = Some(Err(format!("WebSocket: {e}")));
                    break;
                }
            }
        }
        // Pongs and the answer to a close.
        let _ = ws.flush();
        got.reply = std::mem::take(&mut ws.get_mut().output);
        if got.end.is_some() {
            self.state = State::Ended;
        }
    }

    /// `mqtt` as one binary frame, to write; nothing before the upgrade
    /// is done or after the end.
    pub(crate) fn frame(&mut self, mqtt: &[u8]) -> Vec<u8> {
        let State::Open(ws) = &mut self.state else {
            return Vec::new();
        };
        let _ = ws.send(Message::Binary(tungstenite::Bytes::copy_from_slice(mqtt)));
        std::mem::take(&mut ws.get_mut().output)
    }

    /// A close frame (the broker closes the connection), to write.
    pub(crate) fn close(&mut self) -> Vec<u8> {
        let State::Open(ws) = &mut self.state else {
            return Vec::new();
        };
        let _ = ws.close(None);
        let _ = ws.flush();
        let out = std::mem::take(&mut ws.get_mut().output);
        self.state = State::Ended;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPGRADE: &str = "GET /mqtt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n";

    /// A client's masked binary frame.
    fn masked(payload: &[u8]) -> Vec<u8> {
        let mask = [1u8, 2, 3, 4];
        let mut f = vec![0x82, 0x80 | payload.len() as u8];
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    }

    #[test]
    fn an_upgrade_in_pieces_then_packets_across_frames() {
        let mut ws = WsConn::new("/mqtt".into(), 1 << 20);
        let (a, b) = UPGRADE.as_bytes().split_at(30);
        let got = ws.receive(a);
        assert!(got.reply.is_empty() && got.end.is_none());
        let got = ws.receive(b);
        let answer = String::from_utf8_lossy(&got.reply);
        assert!(answer.starts_with("HTTP/1.1 101"), "{answer}");
        assert!(
            answer
                .to_ascii_lowercase()
                .contains("sec-websocket-protocol: mqtt"),
            "{answer}"
        );
        // A frame in two reads.
        let frame = masked(&[0x10, 0x02]);
        assert!(ws.receive(&frame[..3]).mqtt.is_empty());
        assert_eq!(ws.receive(&frame[3..]).mqtt, [0x10, 0x02]);
        let got = ws.receive(&masked(&[0x00, 0x04]));
        assert_eq!(got.mqtt, [0x00, 0x04]);
        // Outbound: an unmasked binary frame.
        assert_eq!(ws.frame(&[0x20, 0x02, 0, 0]), [0x82, 4, 0x20, 0x02, 0, 0]);
    }

    #[test]
    fn the_wrong_path_or_no_mqtt_subprotocol_is_refused() {
        let mut ws = WsConn::new("/mqtt".into(), 1 << 20);
        let got = ws.receive(UPGRADE.replace("/mqtt", "/other").as_bytes());
        assert!(String::from_utf8_lossy(&got.reply).starts_with("HTTP/1.1 404"));
        assert!(matches!(got.end, Some(Err(_))));
        let mut ws = WsConn::new("/mqtt".into(), 1 << 20);
        let got = ws.receive(
            UPGRADE
                .replace("Sec-WebSocket-Protocol: mqtt\r\n", "")
                .as_bytes(),
        );
        assert!(String::from_utf8_lossy(&got.reply).starts_with("HTTP/1.1 400"));
        assert!(got.end.is_some());
    }

    #[test]
    fn a_text_frame_ends_the_connection() {
        let mut ws = WsConn::new("/mqtt".into(), 1 << 20);
        ws.receive(UPGRADE.as_bytes());
        let mut text = masked(b"hi");
        text[0] = 0x81;
        assert!(matches!(ws.receive(&text).end, Some(Err(_))));
        assert!(ws.frame(b"x").is_empty());
    }
}
