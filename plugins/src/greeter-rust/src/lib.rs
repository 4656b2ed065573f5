//! A configured plug-in with state, like `greeter.py`: the manifest's `config.name` greets
//! whoever `?who=` names; `PUT /name` with a text body changes the name until the plug-in is
//! restarted (the state lives in the wasm instance, or the native process).
use valor::*;

struct Greeter {
    name: String,
}

fn on_create(config: &Config) -> Result<Greeter, String> {
    let name = match config.get("name") {
        None => "Valor",
        Some(value) => value.as_str().ok_or("config 'name' must be a string")?,
    };
    Ok(Greeter { name: name.to_string() })
}

#[vlugin]
fn greet(greeter: &mut Greeter, req: Request) -> Result<Response, Response> {
    match (req.method(), req.path()) {
        ("GET", "/") => match req.query_param("who").filter(|who| !who.is_empty()) {
            Some(who) => Ok(format!("{} says hello {}!", greeter.name, who).into()),
            None => Err(Response::error(400, "missing query parameter 'who', as in ?who=Bob")),
        },
        ("PUT", "/name") => {
            let name = req.text()?.trim();
            if name.is_empty() {
                return Err(Response::error(400, "the new name is empty"));
            }
            greeter.name = name.to_string();
            Ok(format!("I am {} now", greeter.name).into())
        }
        (method, path) => Err(Response::error(404, &format!("no route for {} {}", method, path))),
    }
}
