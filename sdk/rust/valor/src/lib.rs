//! Valor plug-ins in Rust. The original Valor's example, unchanged but for the `use` line:
//!
//! ```ignore
//! use valor::*;
//!
//! #[vlugin]
//! fn my_handler(req: Request) -> Response {
//!     "Hello Plugin!".into()
//! }
//! ```
//!
//! The same crate (`crate-type = ["cdylib"]`) builds to a `wasm` plug-in for both hosts with
//! `--target wasm32-unknown-unknown`, and to a `native` plug-in for the server (a shared
//! library) for the host's own target; `python -m valor.toolchain` does both.
//!
//! With state: a function named `on_create` receives the manifest's `config` once, and what it
//! returns is handed to the handler, as `on_create(ctx)` and `on_request(ctx, req)` do in Python:
//!
//! ```ignore
//! struct Counter { step: i64, count: i64 }
//!
//! fn on_create(config: &Config) -> Result<Counter, String> {
//!     Ok(Counter { step: config.get("step").and_then(Value::as_i64).unwrap_or(1), count: 0 })
//! }
//!
//! #[vlugin]
//! fn count(state: &mut Counter, _req: Request) -> String {
//!     state.count += state.step;
//!     state.count.to_string()
//! }
//! ```
//!
//! State lives in the plug-in's instance (wasm) or process (native): a panic answers 500 and
//! the next request starts again from `on_create`.

pub mod abi;
mod http;
mod json;

pub use http::{reason_phrase, Request, Response, BINARY, JSON, TEXT};
pub use json::{Config, JsonError, Value};
pub use valor_macros::vlugin;

/// What `#[vlugin]` expands to: the exports of the wasm ABI (`alloc`, `handle`, `valor_init`)
/// or of the native ABI (`valor_init`, `valor_handle`, `valor_free`), by target.
#[doc(hidden)]
#[macro_export]
macro_rules! __vlugin_exports {
    ($handler:ident, stateless) => {
        $crate::__vlugin_exports!(
            @exports
            |_: &$crate::Config| ::std::result::Result::<(), ::std::string::String>::Ok(()),
            |_: &mut (), req| ::std::convert::Into::<$crate::Response>::into($handler(req))
        );
    };
    ($handler:ident, stateful) => {
        $crate::__vlugin_exports!(
            @exports
            on_create,
            |state, req| ::std::convert::Into::<$crate::Response>::into($handler(state, req))
        );
    };
    (@exports $create:expr, $handle:expr) => {
        const _: () = {
            #[cfg(target_arch = "wasm32")]
            #[export_name = "alloc"]
            extern "C" fn __valor_alloc(len: u32) -> u32 {
                $crate::__private::wasm_alloc(len)
            }

            #[cfg(target_arch = "wasm32")]
            #[export_name = "valor_init"]
            extern "C" fn __valor_init(ptr: u32, len: u32) -> i32 {
                let config = unsafe { $crate::__private::wasm_take(ptr, len) };
                $crate::__private::init(&config, $create)
            }

            #[cfg(target_arch = "wasm32")]
            #[export_name = "handle"]
            extern "C" fn __valor_handle(ptr: u32, len: u32) -> u64 {
                let request = unsafe { $crate::__private::wasm_take(ptr, len) };
                $crate::__private::wasm_answer($crate::__private::answer(&request, $create, $handle))
            }

            #[cfg(not(target_arch = "wasm32"))]
            #[export_name = "valor_init"]
            unsafe extern "C" fn __valor_init(config: *const u8, len: usize) -> i32 {
                let config = $crate::__private::native_slice(config, len);
                $crate::__private::native_catch(|| $crate::__private::init(config, $create))
            }

            #[cfg(not(target_arch = "wasm32"))]
            #[export_name = "valor_handle"]
            unsafe extern "C" fn __valor_handle(
                req: *const u8,
                len: usize,
                resp: *mut *mut u8,
                resp_len: *mut usize,
            ) -> i32 {
                let request = $crate::__private::native_slice(req, len);
                $crate::__private::native_catch(|| {
                    let answer = $crate::__private::answer(request, $create, $handle);
                    $crate::__private::native_answer(answer, resp, resp_len)
                })
            }

            #[cfg(not(target_arch = "wasm32"))]
            #[export_name = "valor_free"]
            unsafe extern "C" fn __valor_free(resp: *mut u8) {
                $crate::__private::native_free(resp)
            }
        };
    };
}

/// What the exports call. Not a public API.
#[doc(hidden)]
pub mod __private {
    use crate::abi::{decode_request, encode_response};
    use crate::{Config, Request, Response, Value};
    use std::any::Any;
    use std::cell::RefCell;

    thread_local! {
        static CONFIG: RefCell<Value> = RefCell::new(Value::Object(Vec::new()));
        static STATE: RefCell<Option<Box<dyn Any>>> = RefCell::new(None);
        static ANSWER: RefCell<Vec<u8>> = RefCell::new(Vec::new());
    }

    /// `valor_init`: keep the config and create the state; non-zero (a load error) if
    /// the config is not JSON or `on_create` fails (its message goes to stderr, the log).
    pub fn init<S: 'static>(config: &[u8], create: impl FnOnce(&Config) -> Result<S, String>) -> i32 {
        let parsed = match std::str::from_utf8(config).ok().map(Value::parse) {
            Some(Ok(value)) => value,
            _ => {
                eprintln!("valor: the plug-in's config is not JSON");
                return 1;
            }
        };
        CONFIG.with(|c| *c.borrow_mut() = parsed);
        match CONFIG.with(|c| create(&c.borrow())) {
            Ok(state) => {
                STATE.with(|s| *s.borrow_mut() = Some(Box::new(state)));
                0
            }
            Err(message) => {
                eprintln!("valor: on_create failed: {}", message);
                2
            }
        }
    }

    /// A request buffer in, an answer buffer out. The state is taken out while the handler
    /// runs, so a panic drops it and the next request starts again from `on_create`.
    pub fn answer<S: 'static>(
        buffer: &[u8],
        create: impl FnOnce(&Config) -> Result<S, String>,
        handle: impl FnOnce(&mut S, Request) -> Response,
    ) -> Vec<u8> {
        let request = match decode_request(buffer) {
            Ok(request) => request,
            Err(problem) => {
                return encode_response(&Response::error(500, &format!("bad request buffer: {}", problem)))
            }
        };
        let mut state: Box<dyn Any> = match STATE.with(|s| s.borrow_mut().take()) {
            Some(state) => state,
            None => match CONFIG.with(|c| create(&c.borrow())) {
                Ok(state) => Box::new(state),
                Err(message) => {
                    let detail = format!("on_create failed: {}", message);
                    return encode_response(&Response::error(500, &detail));
                }
            },
        };
        let state_ref = state.downcast_mut::<S>().expect("the state has one type");
        let response = handle(state_ref, request);
        STATE.with(|s| *s.borrow_mut() = Some(state));
        encode_response(&response)
    }

    /// wasm `alloc`: room for `len` bytes, 0 when there is none.
    pub fn wasm_alloc(len: u32) -> u32 {
        let layout = std::alloc::Layout::from_size_align(len.max(1) as usize, 1).unwrap();
        unsafe { std::alloc::alloc(layout) as usize as u32 }
    }

    /// The bytes the host wrote at `wasm_alloc`'s pointer, owned (and freed) from here on.
    ///
    /// # Safety
    /// `ptr` and `len` are those of one `wasm_alloc` call, taken once.
    pub unsafe fn wasm_take(ptr: u32, len: u32) -> Vec<u8> {
        Vec::from_raw_parts(ptr as usize as *mut u8, len as usize, len.max(1) as usize)
    }

    /// `(ptr << 32) | len` of the answer, kept until the next one.
    pub fn wasm_answer(answer: Vec<u8>) -> u64 {
        ANSWER.with(|slot| {
            let mut slot = slot.borrow_mut();
            *slot = answer;
            (slot.as_ptr() as usize as u64) << 32 | slot.len() as u64
        })
    }

    /// # Safety
    /// `ptr` points at `len` readable bytes (or `len` is 0).
    pub unsafe fn native_slice<'a>(ptr: *const u8, len: usize) -> &'a [u8] {
        if len == 0 {
            &[]
        } else {
            std::slice::from_raw_parts(ptr, len)
        }
    }

    /// A panic must not unwind into C: it is caught and answered as a failure (non-zero).
    pub fn native_catch(call: impl FnOnce() -> i32) -> i32 {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)).unwrap_or(-1)
    }

    /// Hands the answer to C; its length sits in the 8 bytes before the pointer for `valor_free`.
    ///
    /// # Safety
    /// `resp` and `resp_len` are writable.
    pub unsafe fn native_answer(answer: Vec<u8>, resp: *mut *mut u8, resp_len: *mut usize) -> i32 {
        let mut framed = Vec::with_capacity(8 + answer.len());
        framed.extend_from_slice(&(answer.len() as u64).to_le_bytes());
        framed.extend_from_slice(&answer);
        let raw = Box::into_raw(framed.into_boxed_slice()) as *mut u8;
        *resp = raw.add(8);
        *resp_len = answer.len();
        0
    }

    /// # Safety
    /// `resp` came from `native_answer` and is freed once.
    pub unsafe fn native_free(resp: *mut u8) {
        if resp.is_null() {
            return;
        }
        let start = resp.sub(8);
        let mut len = [0u8; 8];
        std::ptr::copy_nonoverlapping(start, len.as_mut_ptr(), 8);
        let total = 8 + u64::from_le_bytes(len) as usize;
        drop(Box::from_raw(std::ptr::slice_from_raw_parts_mut(start, total)));
    }
}
