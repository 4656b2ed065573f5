//! The hello example in Rust: `GET /` is `Hello Plugin!`, `POST /echo` answers the body with
//! its content type, anything else is a 404 naming the path (as every kind's example does).
use valor::*;

#[vlugin]
fn my_handler(req: Request) -> Response {
    match (req.method(), req.path()) {
        ("GET", "/") => "Hello Plugin!".into(),
        ("POST", "/echo") => {
            let content_type = req.header("content-type").unwrap_or(BINARY).to_string();
            Response::bytes(&content_type, req.into_body())
        }
        (_, path) => {
            let body = Value::object(vec![("error", "no route".into()), ("path", path.into())]);
            // Compact, byte for byte the C and JavaScript examples' answer.
            Response::bytes(JSON, body.to_compact()).with_status(404)
        }
    }
}
