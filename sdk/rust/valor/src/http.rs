//! `Request` and `Response`, as Valor's wire format has them.

use crate::json::Value;

pub const TEXT: &str = "text/plain; charset=utf-8";
pub const JSON: &str = "application/json";
pub const BINARY: &str = "application/octet-stream";

/// A request: the URL has the mount prefix stripped; header names are lower case.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    pub(crate) method: String,
    pub(crate) url: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Request {
    /// A request as the host would send it (for a plug-in's own tests).
    pub fn new(method: &str, url: &str) -> Request {
        Request {
            method: method.to_string(),
            url: url.to_string(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_ascii_lowercase(), value.to_string()));
        self
    }

    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Request {
        self.body = body.into();
        self
    }

    pub fn method(&self) -> &str {
        &self.method
    }

    /// The full URL, `http://host/path?query` (below the mount prefix).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The URL's path, `/` at least, without the query.
    pub fn path(&self) -> &str {
        let rest = match self.url.find("://") {
            Some(at) => {
                let after = &self.url[at + 3..];
                after.find('/').map_or("", |slash| &after[slash..])
            }
            None => &self.url,
        };
        let end = rest.find(|c| c == '?' || c == '#').unwrap_or(rest.len());
        if end == 0 {
            "/"
        } else {
            &rest[..end]
        }
    }

    /// The raw query string, `""` when there is none.
    pub fn query(&self) -> &str {
        let after = match self.url.find('?') {
            Some(at) => &self.url[at + 1..],
            None => return "",
        };
        after.split('#').next().unwrap_or("")
    }

    /// The first value of a query parameter, percent-decoded (`+` is a space).
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query().split('&').find_map(|pair| {
            let mut parts = pair.splitn(2, '=');
            let key = decode_component(parts.next().unwrap_or(""));
            (key == name).then(|| decode_component(parts.next().unwrap_or("")))
        })
    }

    /// A header's value by name, in any case.
    pub fn header(&self, name: &str) -> Option<&str> {
        header_value(&self.headers, name)
    }

    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    pub fn body(&self) -> &[u8] {
        &self.body
    }

    pub fn into_body(self) -> Vec<u8> {
        self.body
    }

    /// The body as text; a body that is not UTF-8 is a 400 answer, ready to return.
    pub fn text(&self) -> Result<&str, Response> {
        std::str::from_utf8(&self.body)
            .map_err(|e| Response::error(400, &format!("the request body is not UTF-8: {}", e)))
    }

    /// The body as JSON; a body that is not JSON is a 400 answer, ready to return.
    pub fn json(&self) -> Result<Value, Response> {
        Value::parse(self.text()?)
            .map_err(|e| Response::error(400, &format!("the request body is not JSON: {}", e)))
    }
}

/// `%XX` and `+` decoded; bytes that are not UTF-8 become U+FFFD.
/// The first value of the header called `name` (in any case) among `headers`.
fn header_value<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn decode_component(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len()
                && bytes[i + 1].is_ascii_hexdigit()
                && bytes[i + 2].is_ascii_hexdigit() =>
            {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("0");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(0));
                i += 2;
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An answer: a status, headers and a body.
#[derive(Clone, Debug, PartialEq)]
pub struct Response {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Response {
    /// A response with this status, no headers and no body.
    pub fn new(status: u16) -> Response {
        Response { status, headers: Vec::new(), body: Vec::new() }
    }

    /// `200` with a text body.
    pub fn text(body: impl Into<String>) -> Response {
        Response::new(200).with_header("content-type", TEXT).with_body(body.into())
    }

    /// `200` with a JSON body (written as Python's `json.dumps` writes it).
    pub fn json(value: &Value) -> Response {
        Response::new(200).with_header("content-type", JSON).with_body(value.to_string())
    }

    /// `200` with a body of the given media type.
    pub fn bytes(content_type: &str, body: impl Into<Vec<u8>>) -> Response {
        Response::new(200).with_header("content-type", content_type).with_body(body)
    }

    /// Valor's JSON error answer, `{"status", "error", "detail"}`, as the runtime writes it.
    pub fn error(status: u16, detail: &str) -> Response {
        let body = Value::object(vec![
            ("status", Value::from(status)),
            ("error", Value::from(reason_phrase(status))),
            ("detail", Value::from(detail)),
        ]);
        Response::json(&body).with_status(status)
    }

    pub fn with_status(mut self, status: u16) -> Response {
        self.status = status;
        self
    }

    /// Adds a header (replacing `content-type` if it is one).
    pub fn with_header(mut self, name: &str, value: &str) -> Response {
        let name = name.to_ascii_lowercase();
        if name == "content-type" {
            self.headers.retain(|(n, _)| n != "content-type");
        }
        self.headers.push((name, value.to_string()));
        self
    }

    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Response {
        self.body = body.into();
        self
    }

    pub fn status(&self) -> u16 {
        self.status
    }

    /// A header's value by name, in any case.
    pub fn header(&self, name: &str) -> Option<&str> {
        header_value(&self.headers, name)
    }

    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    pub fn body(&self) -> &[u8] {
        &self.body
    }
}

impl From<&str> for Response {
    fn from(text: &str) -> Response {
        Response::text(text)
    }
}

impl From<String> for Response {
    fn from(text: String) -> Response {
        Response::text(text)
    }
}

impl From<Vec<u8>> for Response {
    fn from(body: Vec<u8>) -> Response {
        Response::bytes(BINARY, body)
    }
}

impl From<&[u8]> for Response {
    fn from(body: &[u8]) -> Response {
        Response::bytes(BINARY, body)
    }
}

impl From<Value> for Response {
    fn from(value: Value) -> Response {
        Response::json(&value)
    }
}

/// A bare status, e.g. `404.into()`.
impl From<u16> for Response {
    fn from(status: u16) -> Response {
        Response::new(status)
    }
}

/// `()` is `204 No Content`, as `None` is for a Python plug-in.
impl From<()> for Response {
    fn from(_: ()) -> Response {
        Response::new(204)
    }
}

/// So a handler can return `Result<_, Response>` and use `?`.
impl<T: Into<Response>, E: Into<Response>> From<Result<T, E>> for Response {
    fn from(result: Result<T, E>) -> Response {
        match result {
            Ok(ok) => ok.into(),
            Err(err) => err.into(),
        }
    }
}

/// The HTTP reason phrase Python's `http.HTTPStatus` gives, `"Error"` for others.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Request Entity Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_and_query() {
        let req = Request::new("GET", "http://h:1/a/b?who=Bob+J%C3%A9&x=%zz#f");
        assert_eq!(req.path(), "/a/b");
        assert_eq!(req.query_param("who").as_deref(), Some("Bob Jé"));
        assert_eq!(req.query_param("x").as_deref(), Some("%zz"));
        assert_eq!(req.query_param("y"), None);
        assert_eq!(Request::new("GET", "http://h").path(), "/");
        assert_eq!(Request::new("GET", "http://h?x=1").path(), "/");
        assert_eq!(Request::new("GET", "http://h/?q=%").query_param("q").as_deref(), Some("%"));
    }

    #[test]
    fn conversions() {
        let text: Response = "hi".into();
        assert_eq!((text.status(), text.header("Content-Type"), text.body()), (200, Some(TEXT), &b"hi"[..]));
        let err = Response::error(400, "bad é");
        assert_eq!(err.body(), br#"{"status": 400, "error": "Bad Request", "detail": "bad \u00e9"}"#);
        let bad = Request::new("POST", "http://h/").with_body(vec![0xff]);
        assert_eq!(bad.text().unwrap_err().status(), 400);
        let ok: Response = Ok::<_, Response>("x").into();
        assert_eq!(ok.status(), 200);
    }
}
