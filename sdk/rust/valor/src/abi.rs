//! The buffer format shared by every wasm and native plug-in (`valor/loaders/abi.py` on the
//! host side, `valor_abi.h` for C): a 4-byte little-endian head length `n`, `n` bytes of JSON
//! head, then the raw body.
//!
//! request head:  `{"method": "GET", "url": "http://host/p?q=1", "headers": [["name", "value"]]}`
//! response head: `{"status": 200, "headers": [["content-type", "text/plain"]]}`

use crate::http::{Request, Response};
use crate::json::Value;

/// A request buffer as a `Request`; the error says what is wrong with it.
pub fn decode_request(buffer: &[u8]) -> Result<Request, String> {
    if buffer.len() < 4 {
        return Err(format!("a message needs at least 4 bytes, got {}", buffer.len()));
    }
    let size = u32::from_le_bytes([buffer[0], buffer[1], buffer[2], buffer[3]]) as usize;
    let head = buffer
        .get(4..4 + size)
        .ok_or_else(|| format!("head length {} is past the end of the message", size))?;
    let head = std::str::from_utf8(head).map_err(|e| format!("the head is not UTF-8: {}", e))?;
    let head = Value::parse(head).map_err(|e| format!("the head is not JSON: {}", e))?;
    let text = |key: &str| -> Result<String, String> {
        head.get(key)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| format!("the head has no string {:?}", key))
    };
    let mut headers = Vec::new();
    for pair in head.get("headers").and_then(Value::as_array).unwrap_or(&[]) {
        match pair.as_array() {
            Some([name, value]) => match (name.as_str(), value.as_str()) {
                (Some(name), Some(value)) => headers.push((name.to_string(), value.to_string())),
                _ => return Err("a header is not a pair of strings".to_string()),
            },
            _ => return Err("a header is not a pair of strings".to_string()),
        }
    }
    Ok(Request {
        method: text("method")?,
        url: text("url")?,
        headers,
        body: buffer[4 + size..].to_vec(),
    })
}

/// A `Response` as one buffer.
pub fn encode_response(response: &Response) -> Vec<u8> {
    let headers = response
        .headers
        .iter()
        .map(|(n, v)| Value::Array(vec![Value::from(n.as_str()), Value::from(v.as_str())]))
        .collect();
    let head = Value::object(vec![
        ("status", Value::from(response.status)),
        ("headers", Value::Array(headers)),
    ])
    .to_compact();
    let mut out = Vec::with_capacity(4 + head.len() + response.body.len());
    out.extend_from_slice(&(head.len() as u32).to_le_bytes());
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(&response.body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let head = br#"{"method":"POST","url":"http://h/echo","headers":[["content-type","text/x"]]}"#;
        let mut buffer = (head.len() as u32).to_le_bytes().to_vec();
        buffer.extend_from_slice(head);
        buffer.extend_from_slice(&[0xff, 0]);
        let req = decode_request(&buffer).unwrap();
        assert_eq!((req.method(), req.path(), req.header("Content-Type")), ("POST", "/echo", Some("text/x")));
        assert_eq!(req.body(), &[0xff, 0]);
        let out = encode_response(&Response::bytes("text/x", req.into_body()));
        assert_eq!(&out[4..out.len() - 2], br#"{"status":200,"headers":[["content-type","text/x"]]}"#);
        assert!(decode_request(&[9, 0, 0, 0, b'{']).is_err());
    }
}
