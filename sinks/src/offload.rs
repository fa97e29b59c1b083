//! CPU-heavy steps of large batches (compression, OTLP JSON) run on the core's
//! blocking thread, so the reactor keeps serving its sockets meanwhile.
//!
//! glommio pins an executor's blocking thread to the executor's own CPU: this
//! costs no extra CPU, it only lets the kernel interleave the work with the
//! reactor instead of the reactor stalling for tens of milliseconds.

/// Work on at least this many input bytes is offloaded; smaller work runs
/// inline (a hand-off costs more than it saves).
pub(crate) const OFFLOAD_BYTES: usize = 64 << 10;

/// Runs `work` (sized `bytes`) inline or on the blocking thread. A panic of offloaded work is
/// caught there (it would end the core's blocking thread, and every file operation of the core
/// with it) and resumed here, where the caller's containment sees it (see [`crate::panics`]).
pub(crate) async fn run<R>(bytes: usize, work: impl FnOnce() -> R + Send + 'static) -> R
where
    R: Send + 'static,
{
    if bytes < OFFLOAD_BYTES {
        work()
    } else {
        let done = glommio::executor()
            .spawn_blocking(move || crate::panics::contain_payload(work))
            .await;
        done.unwrap_or_else(|payload| std::panic::resume_unwind(payload))
    }
}
