//! Model work off the async runtime: a lane is a bounded set of worker slots (blocking threads)
//! with a bounded queue in front. A request that finds the queue full is refused at once (503
//! with `Retry-After`) instead of piling up. The server has two lanes so that clicks (the mask
//! decoder, milliseconds) never wait behind image encoders and automatic masks (seconds).

use super::error::ApiError;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct Lane {
    pub name: &'static str,
    /// The lane's own compute threads, when it has them (else rayon's global pool).
    threads: Option<Arc<rayon::ThreadPool>>,
    workers: usize,
    max_queue: usize,
    slots: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    running: Arc<AtomicUsize>,
}

/// Decrements a counter when dropped (a waiting request whose client went away, a finished job).
struct Count(Arc<AtomicUsize>);

impl Count {
    fn up(c: &Arc<AtomicUsize>) -> Self {
        c.fetch_add(1, Ordering::SeqCst);
        Self(c.clone())
    }
}

impl Drop for Count {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Lane {
    /// A lane whose work runs on rayon's global pool.
    pub fn new(name: &'static str, workers: usize, max_queue: usize) -> Self {
        Self {
            name,
            threads: None,
            workers: workers.max(1),
            max_queue,
            slots: Arc::new(Semaphore::new(workers.max(1))),
            waiting: Arc::new(AtomicUsize::new(0)),
            running: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// A lane whose work runs on its own `threads` compute threads: its parallel loops are
    /// scheduled by the OS beside another lane's instead of queueing behind that lane's tasks in
    /// a shared pool (a click must not wait for an image encoder's blocks to drain).
    ///
    /// `nice` lowers the threads' scheduling priority (Linux; 0 leaves it): the heavy lane runs
    /// at a higher nice value than the clicks, so that a click running beside an image encoder
    /// gets most of the cores instead of half.
    pub fn with_own_threads(
        name: &'static str,
        workers: usize,
        max_queue: usize,
        threads: usize,
        nice: i32,
    ) -> anyhow::Result<Self> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .thread_name(move |i| format!("segrs-{name}-{i}"))
            .start_handler(move |_| lower_priority(nice))
            .build()?;
        Ok(Self {
            threads: Some(Arc::new(pool)),
            ..Self::new(name, workers, max_queue)
        })
    }

    /// Requests waiting for a worker.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Workers busy.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }

    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Runs `work` on a blocking thread once a worker is free; 503 when every worker is busy and
    /// the queue is full. The work runs to its end even if the caller stops waiting.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        self.admit()?.run(work).await
    }

    /// Takes a place now (a free worker, or a place in the queue), to run work later: 503 when
    /// every worker is busy and the queue is full.
    pub fn admit(&self) -> Result<Ticket, ApiError> {
        let permit = self.slots.clone().try_acquire_owned().ok();
        let waiting = if permit.is_some() {
            None
        } else {
            let admitted = self
                .waiting
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |w| {
                    (w < self.max_queue).then_some(w + 1)
                })
                .is_ok();
            if !admitted {
                return Err(ApiError::busy(
                    format!(
                        "the {} queue is full ({} running, {} waiting); retry shortly",
                        self.name,
                        self.running(),
                        self.waiting()
                    ),
                    1,
                ));
            }
            Some(Count(self.waiting.clone()))
        };
        Ok(Ticket {
            threads: self.threads.clone(),
            slots: self.slots.clone(),
            permit,
            waiting,
            running: self.running.clone(),
        })
    }
}

/// A place in a lane: a worker, or a place in its queue.
pub struct Ticket {
    threads: Option<Arc<rayon::ThreadPool>>,
    slots: Arc<Semaphore>,
    permit: Option<OwnedSemaphorePermit>,
    /// Holds the queue place until a worker is free (released if the ticket is dropped).
    waiting: Option<Count>,
    running: Arc<AtomicUsize>,
}

impl Ticket {
    /// Runs `work` on a blocking thread once a worker is free.
    pub async fn run<T: Send + 'static>(
        mut self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let permit = match self.permit.take() {
            Some(p) => p,
            None => {
                let p = self
                    .slots
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| ApiError::internal("the worker pool is closed"))?;
                self.waiting = None;
                p
            }
        };
        let running = Count::up(&self.running);
        let threads = self.threads.take();
        tokio::task::spawn_blocking(move || {
            let _slot = permit;
            let _running = running;
            match threads {
                Some(pool) => pool.install(work),
                None => work(),
            }
        })
        .await
        .map_err(|e| ApiError::internal(format!("model work failed: {e}")))
    }
}

/// Raises this thread's nice value by `nice` (best effort: where it cannot, nothing changes).
fn lower_priority(nice: i32) {
    #[cfg(target_os = "linux")]
    if nice > 0 {
        // SAFETY: plain system calls on the calling thread's id.
        unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            let now = libc::getpriority(libc::PRIO_PROCESS, tid);
            libc::setpriority(libc::PRIO_PROCESS, tid, (now + nice).min(19));
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}
