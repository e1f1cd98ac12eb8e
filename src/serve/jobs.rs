//! Automatic-mask jobs: started by `POST /v1/sam/auto`, polled at `GET /v1/jobs/{id}` for their
//! progress and, once done, their records. Finished jobs are kept up to a bound, oldest dropped.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Jobs kept at once (running or finished).
pub const MAX_JOBS: usize = 64;

#[derive(Clone, Debug, PartialEq)]
pub enum JobState {
    Queued,
    Running,
    Done(Arc<serde_json::Value>),
    Failed(String),
}

pub struct Job {
    pub id: String,
    pub image_id: String,
    pub done: AtomicUsize,
    pub total: AtomicUsize,
    pub state: Mutex<JobState>,
    pub started: std::time::Instant,
}

impl Job {
    pub fn set(&self, s: JobState) {
        *self.state.lock().unwrap() = s;
    }

    /// The job as `GET /v1/jobs/{id}` answers it.
    pub fn to_json(&self) -> serde_json::Value {
        let state = self.state.lock().unwrap().clone();
        let mut v = serde_json::json!({
            "job_id": self.id,
            "image_id": self.image_id,
            "done": self.done.load(Ordering::Relaxed),
            "total": self.total.load(Ordering::Relaxed),
            "elapsed_s": self.started.elapsed().as_secs_f64(),
        });
        let (name, extra) = match state {
            JobState::Queued => ("queued", None),
            JobState::Running => ("running", None),
            JobState::Done(masks) => ("done", Some(("masks", (*masks).clone()))),
            JobState::Failed(e) => ("failed", Some(("error", serde_json::Value::String(e)))),
        };
        v["state"] = name.into();
        if let Some((k, x)) = extra {
            v[k] = x;
        }
        v
    }
}

/// The jobs by id, and their ids oldest first.
type Kept = (HashMap<String, Arc<Job>>, VecDeque<String>);

#[derive(Default)]
pub struct Jobs {
    inner: Mutex<Kept>,
}

impl Jobs {
    /// A new queued job; the oldest finished job is dropped past [`MAX_JOBS`]. `None` when every
    /// kept job is still unfinished.
    pub fn start(&self, id: String, image_id: String) -> Option<Arc<Job>> {
        let mut g = self.inner.lock().unwrap();
        let (map, order) = &mut *g;
        if order.len() >= MAX_JOBS {
            let finished = order.iter().position(|k| {
                map.get(k).is_some_and(|j| {
                    matches!(
                        *j.state.lock().unwrap(),
                        JobState::Done(_) | JobState::Failed(_)
                    )
                })
            })?;
            let k = order.remove(finished).unwrap();
            map.remove(&k);
        }
        let job = Arc::new(Job {
            id: id.clone(),
            image_id,
            done: AtomicUsize::new(0),
            total: AtomicUsize::new(0),
            state: Mutex::new(JobState::Queued),
            started: std::time::Instant::now(),
        });
        map.insert(id.clone(), job.clone());
        order.push_back(id);
        Some(job)
    }

    pub fn get(&self, id: &str) -> Option<Arc<Job>> {
        self.inner.lock().unwrap().0.get(id).cloned()
    }

    pub fn len(&self) -> usize {
        self.inner.lock().unwrap().0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
