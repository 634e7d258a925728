//! One QuickJS runtime and how a call runs in it: a fresh context with TykJS and the host
//! functions, the script, then `<name>.DoProcessRequest(request, session, spec)`. A fresh
//! context per call is Tyk's `vm.Copy()`: nothing a call leaves in the globals reaches the next.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use rquickjs::context::EvalOptions;
use rquickjs::function::{Opt, This};
use rquickjs::{CaughtError, Coerced, Context, Ctx, Function, Object, Runtime, Value};

use super::{Call, DEADLINE, JsError, MEMORY_LIMIT, STACK_LIMIT};

const TYK_JS: &str = include_str!("tyk.js");
/// Largest answer taken from a script (its JSON text).
pub const MAX_ANSWER_BYTES: usize = 2 * 1024 * 1024;
/// `log` / `rawlog` lines kept per call, and their length: a script cannot flood the log.
const LOG_LINES: u32 = 20;
const LOG_LINE_BYTES: usize = 1024;

pub struct Vm {
    rt: Runtime,
    deadline: Rc<Cell<Option<Instant>>>,
}

impl Vm {
    pub fn new() -> Result<Self, JsError> {
        let rt = Runtime::new().map_err(|e| JsError::Script(format!("QuickJS: {e}")))?;
        rt.set_memory_limit(MEMORY_LIMIT);
        rt.set_max_stack_size(STACK_LIMIT);
        let deadline: Rc<Cell<Option<Instant>>> = Rc::default();
        let due = deadline.clone();
        // QuickJS asks every few thousand operations; `true` ends the script with an
        // exception it cannot catch.
        rt.set_interrupt_handler(Some(Box::new(move || {
            due.get().is_some_and(|at| Instant::now() >= at)
        })));
        Ok(Self { rt, deadline })
    }

    /// Runs one call; its answer is the JSON text `DoProcessRequest` returned.
    pub fn run(&mut self, call: &Call, source: &str, file: &str) -> Result<String, JsError> {
        let due = Instant::now() + DEADLINE;
        self.deadline.set(Some(due));
        let result = self.run_in_fresh_context(call, source, file);
        self.deadline.set(None);
        self.rt.run_gc();
        match result {
            Err(_) if Instant::now() >= due => Err(JsError::Timeout),
            other => other,
        }
    }

    fn run_in_fresh_context(
        &self,
        call: &Call,
        source: &str,
        file: &str,
    ) -> Result<String, JsError> {
        let context = Context::full(&self.rt).map_err(|_| JsError::OutOfMemory)?;
        context.with(|ctx| {
            let fail = |e: rquickjs::Error, ctx: &Ctx<'_>| described(ctx, e);
            install_host_functions(&ctx, &call.api_id).map_err(|e| fail(e, &ctx))?;
            ctx.eval::<(), _>(TYK_JS).map_err(|e| fail(e, &ctx))?;
            // Tyk's scripts are sloppy-mode ES5 (otto): undeclared assignments must work.
            let mut options = EvalOptions::default();
            options.strict = false;
            options.filename = Some(file.to_owned());
            ctx.eval_with_options::<(), _>(source, options)
                .map_err(|e| fail(e, &ctx))?;
            let middleware: Value = ctx.globals().get(&*call.name).map_err(|e| fail(e, &ctx))?;
            let Some(middleware) = middleware.into_object() else {
                return Err(JsError::Script(format!(
                    "the script defines no middleware object named {}",
                    call.name
                )));
            };
            let process: Function = middleware.get("DoProcessRequest").map_err(|_| {
                JsError::Script(format!(
                    "{} is not a TykJS middleware (new TykJS.TykMiddleware.NewMiddleware({{}}))",
                    call.name
                ))
            })?;
            let request = ctx
                .json_parse(call.request.as_str())
                .map_err(|e| fail(e, &ctx))?;
            let session = ctx.json_parse(&*call.session).map_err(|e| fail(e, &ctx))?;
            let spec = ctx.json_parse(&*call.spec).map_err(|e| fail(e, &ctx))?;
            let answer: Value = process
                .call((This(middleware.clone()), request, session, spec))
                .map_err(|e| fail(e, &ctx))?;
            let Some(text) = answer.as_string() else {
                return Err(JsError::Script(
                    "the middleware returned nothing: its callback must return \
                     ReturnAuthData(request, session) or ReturnData(request, {})"
                        .into(),
                ));
            };
            let text = text.to_string().map_err(|e| fail(e, &ctx))?;
            if text.len() > MAX_ANSWER_BYTES {
                return Err(JsError::Script(format!(
                    "the middleware's answer is larger than {MAX_ANSWER_BYTES} bytes"
                )));
            }
            Ok(text)
        })
    }
}

/// The exception behind `e`, as the log should show it.
fn described(ctx: &Ctx<'_>, e: rquickjs::Error) -> JsError {
    if matches!(e, rquickjs::Error::Allocation) {
        return JsError::OutOfMemory;
    }
    match CaughtError::catch(ctx, Err::<(), _>(e)) {
        Ok(()) => JsError::Script("unknown error".into()),
        Err(CaughtError::Exception(ex)) => {
            if ex.message().as_deref() == Some("out of memory") {
                return JsError::OutOfMemory;
            }
            JsError::Script(clip(ex.to_string(), 512))
        }
        Err(CaughtError::Error(rquickjs::Error::Allocation)) => JsError::OutOfMemory,
        Err(other) => JsError::Script(clip(other.to_string(), 512)),
    }
}

fn clip(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

/// Tyk's `log`, `rawlog`, `b64enc`, `b64dec`, `rawb64enc`, `rawb64dec`.
fn install_host_functions(ctx: &Ctx<'_>, api_id: &Arc<str>) -> rquickjs::Result<()> {
    let globals: Object = ctx.globals();
    let lines = Rc::new(Cell::new(0u32));
    for name in ["log", "rawlog"] {
        let (api_id, lines) = (api_id.clone(), lines.clone());
        let f = Function::new(ctx.clone(), move |msg: Opt<Coerced<String>>| {
            let n = lines.get();
            if n < LOG_LINES {
                lines.set(n + 1);
                let msg = clip(msg.0.map(|m| m.0).unwrap_or_default(), LOG_LINE_BYTES);
                tracing::info!(target: "portcullis::js", api_id = %api_id, "{msg}");
            }
        })?;
        globals.set(name, f)?;
    }
    globals.set(
        "b64enc",
        Function::new(ctx.clone(), |s: Opt<Coerced<String>>| {
            STANDARD.encode(text(s).as_bytes())
        })?,
    )?;
    globals.set(
        "rawb64enc",
        Function::new(ctx.clone(), |s: Opt<Coerced<String>>| {
            STANDARD_NO_PAD.encode(text(s).as_bytes())
        })?,
    )?;
    // Tyk falls back to unpadded input; undecodable input gives `undefined`.
    globals.set(
        "b64dec",
        Function::new(ctx.clone(), |s: Opt<Coerced<String>>| {
            let s = text(s);
            STANDARD
                .decode(s.as_bytes())
                .or_else(|_| STANDARD_NO_PAD.decode(s.as_bytes()))
                .ok()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
        })?,
    )?;
    globals.set(
        "rawb64dec",
        Function::new(ctx.clone(), |s: Opt<Coerced<String>>| {
            STANDARD_NO_PAD
                .decode(text(s).as_bytes())
                .ok()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
        })?,
    )?;
    Ok(())
}

fn text(s: Opt<Coerced<String>>) -> String {
    s.0.map(|c| c.0).unwrap_or_else(|| "undefined".into())
}
