//! The engine threads: each owns a QuickJS runtime (not `Send`, so it never moves) and its
//! cache of scripts; calls reach them through one bounded queue and answer on a oneshot.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::script::Scripts;
use super::vm::Vm;
use super::{Call, DEADLINE, JsError, QUEUE, QUEUE_WAIT, Reply};

/// Room for the native frames of QuickJS and Rust beyond the JavaScript stack limit.
const THREAD_STACK: usize = 4 * 1024 * 1024;
/// How long past the deadline a caller waits for its answer before giving up.
const SLACK: Duration = Duration::from_millis(500);

struct Job {
    root: PathBuf,
    call: Call,
    queued: Instant,
    answer: oneshot::Sender<Result<Reply, JsError>>,
}

pub struct Pool {
    queue: SyncSender<Job>,
}

impl Pool {
    pub fn start() -> Self {
        let workers = std::thread::available_parallelism()
            .map(|n| n.get().clamp(1, 4))
            .unwrap_or(2);
        let (queue, jobs) = sync_channel(QUEUE);
        let jobs = Arc::new(Mutex::new(jobs));
        for i in 0..workers {
            let jobs = jobs.clone();
            let started = std::thread::Builder::new()
                .name(format!("portcullis-js-{i}"))
                .stack_size(THREAD_STACK)
                .spawn(move || work(&jobs));
            if let Err(e) = started {
                tracing::error!(error = %e, "a JavaScript engine thread could not start");
            }
        }
        Self { queue }
    }

    pub async fn run(&self, root: PathBuf, call: Call) -> Result<Reply, JsError> {
        let (answer, answered) = oneshot::channel();
        let job = Job {
            root,
            call,
            queued: Instant::now(),
            answer,
        };
        match self.queue.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(JsError::Busy),
            Err(TrySendError::Disconnected(_)) => {
                return Err(JsError::Script(
                    "no JavaScript engine thread is running".into(),
                ));
            }
        }
        match tokio::time::timeout(QUEUE_WAIT + DEADLINE + SLACK, answered).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(JsError::Script("the JavaScript engine stopped".into())),
            Err(_) => Err(JsError::Busy),
        }
    }
}

/// One engine thread: until the pool is dropped, take a job, run it, answer.
fn work(jobs: &Mutex<Receiver<Job>>) {
    let mut vm: Option<Vm> = None;
    let mut scripts = Scripts::default();
    loop {
        let job = {
            let jobs = jobs.lock().unwrap_or_else(PoisonError::into_inner);
            match jobs.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        // The client went away, or the call waited so long its caller has given up.
        if job.answer.is_closed() {
            continue;
        }
        if job.queued.elapsed() > QUEUE_WAIT {
            let _ = job.answer.send(Err(JsError::Busy));
            continue;
        }
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
            run(&mut vm, &mut scripts, &job.root, &job.call)
        }))
        .unwrap_or_else(|_| Err(JsError::Script("the JavaScript engine panicked".into())));
        // A runtime that hit its deadline or its memory limit is not trusted again.
        if matches!(
            result,
            Err(JsError::Timeout | JsError::OutOfMemory | JsError::Script(_))
        ) {
            vm = None;
        }
        let _ = job.answer.send(result);
    }
}

fn run(
    vm: &mut Option<Vm>,
    scripts: &mut Scripts,
    root: &std::path::Path,
    call: &Call,
) -> Result<Reply, JsError> {
    let path = super::script::resolve(root, &call.path).map_err(JsError::Load)?;
    let source = scripts.load(&path).map_err(JsError::Load)?;
    let vm = match vm {
        Some(vm) => vm,
        None => vm.insert(Vm::new()?),
    };
    let out = vm.run(call, &source, &call.path)?;
    super::reply::parse(&out)
}
