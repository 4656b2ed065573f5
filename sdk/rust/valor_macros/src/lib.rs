//! `#[vlugin]`: marks the function that answers a Valor plug-in's requests.
//!
//! Written against `proc_macro` alone (crates.io is not needed): the function is kept as it is,
//! and one line is added after it, `::valor::__vlugin_exports!(name, stateless|stateful);`,
//! which writes the exports of the wasm and native ABIs (see the `valor` crate).
//!
//! ```ignore
//! #[vlugin]
//! fn my_handler(req: Request) -> Response { "Hello Plugin!".into() }
//!
//! #[vlugin]   // with state: `on_create(&Config) -> Result<State, String>` must exist
//! fn greet(state: &mut State, req: Request) -> Response { ... }
//! ```

use proc_macro::{Delimiter, Group, Ident, Punct, Spacing, Span, TokenStream, TokenTree};

#[proc_macro_attribute]
pub fn vlugin(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        return error("#[vlugin] takes no arguments (state comes from a function named on_create)");
    }
    let (name, params) = match signature(&item) {
        Ok(found) => found,
        Err(message) => return error(message),
    };
    let flavour = match params {
        1 => "stateless",
        2 => "stateful",
        _ => {
            return error(
                "#[vlugin] marks fn(req: Request) -> impl Into<Response>, \
                 or fn(state: &mut State, req: Request) -> impl Into<Response> with an on_create",
            )
        }
    };
    let mut out = item;
    out.extend(exports_call(&name, flavour));
    out
}

/// The function's name and how many parameters it takes.
fn signature(item: &TokenStream) -> Result<(Ident, usize), &'static str> {
    let mut tokens = item.clone().into_iter();
    while let Some(token) = tokens.next() {
        if let TokenTree::Ident(ident) = &token {
            if ident.to_string() == "fn" {
                let name = match tokens.next() {
                    Some(TokenTree::Ident(name)) => name,
                    _ => return Err("#[vlugin] expected a function name after `fn`"),
                };
                for token in tokens.by_ref() {
                    if let TokenTree::Group(group) = token {
                        if group.delimiter() == Delimiter::Parenthesis {
                            return Ok((name, count_params(group.stream())));
                        }
                    }
                }
                return Err("#[vlugin] expected the function's parameters");
            }
        }
    }
    Err("#[vlugin] marks a function")
}

/// Commas outside angle brackets separate parameters (`HashMap<K, V>` is one type).
fn count_params(params: TokenStream) -> usize {
    let mut count = 0;
    let mut depth = 0i32;
    let mut pending = false;
    for token in params {
        match &token {
            TokenTree::Punct(p) if p.as_char() == '<' => depth += 1,
            TokenTree::Punct(p) if p.as_char() == '>' => depth -= 1,
            TokenTree::Punct(p) if p.as_char() == ',' && depth == 0 => {
                if pending {
                    count += 1;
                }
                pending = false;
                continue;
            }
            _ => {}
        }
        pending = true;
    }
    count + usize::from(pending)
}

/// `::valor::__vlugin_exports!(name, flavour);`
fn exports_call(name: &Ident, flavour: &str) -> TokenStream {
    let span = Span::call_site();
    let mut args = TokenStream::new();
    args.extend([
        TokenTree::Ident(name.clone()),
        TokenTree::Punct(Punct::new(',', Spacing::Alone)),
        TokenTree::Ident(Ident::new(flavour, span)),
    ]);
    let mut out = TokenStream::new();
    out.extend([
        TokenTree::Punct(Punct::new(':', Spacing::Joint)),
        TokenTree::Punct(Punct::new(':', Spacing::Alone)),
        TokenTree::Ident(Ident::new("valor", span)),
        TokenTree::Punct(Punct::new(':', Spacing::Joint)),
        TokenTree::Punct(Punct::new(':', Spacing::Alone)),
        TokenTree::Ident(Ident::new("__vlugin_exports", span)),
        TokenTree::Punct(Punct::new('!', Spacing::Alone)),
        TokenTree::Group(Group::new(Delimiter::Parenthesis, args)),
        TokenTree::Punct(Punct::new(';', Spacing::Alone)),
    ]);
    out
}

/// `compile_error!("message");`
fn error(message: &str) -> TokenStream {
    format!("compile_error!({:?});", message).parse().unwrap()
}
