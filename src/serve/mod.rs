//! `segrs serve`: the models behind an HTTP API and a click-to-segment page, from one binary.
//!
//! Data flows as everywhere else: a request's body is decoded ([`crate::data::image_io`]), the
//! model work runs on a bounded worker [`pool`] off the async runtime, and the answer is JSON,
//! COCO RLE or PNG. Image embeddings are cached by the image's content hash ([`cache`]), so the
//! image encoder runs once per image and each click costs only the mask decoder.
//!
//! - [`api`]: the routes (`/v1/images`, `/v1/sam/predict`, `/v1/sam/auto`, `/v1/jobs/{id}`,
//!   `/v1/semantic/predict`, `/v1/instances/predict`, `/healthz`, `/metrics`) and the page (`/`).
//! - [`error`]: JSON errors with the right status.
//! - [`pool`]: worker lanes with bounded queues (503 with `Retry-After` when full).
//! - [`metrics`]: Prometheus text.
//! - [`jobs`]: automatic-mask jobs with progress.

pub mod api;
pub mod cache;
pub mod error;
pub mod jobs;
pub mod metrics;
pub mod page;
pub mod pool;

use crate::data::labels::LabelConvention;
use crate::models::mask_rcnn::MaskRcnn;
use crate::models::sam::model::ImageEmbedding;
use crate::predict::SemanticPredictor;
use crate::sam::any_model::AnySam;
use anyhow::{Context, Result};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How the server runs.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub host: String,
    pub port: u16,
    /// Every `/v1` route and `/metrics` then need `Authorization: Bearer TOKEN`.
    pub token: Option<String>,
    /// Allow this origin to call the API from its pages (CORS); none by default.
    pub cors: Option<String>,
    /// Bound of the embedding cache, in bytes.
    pub cache_bytes: usize,
    /// Bound of the low-resolution logits kept for refinement, in bytes.
    pub logits_bytes: usize,
    /// Workers for heavy work (image encoder, automatic masks, U-Net, Mask R-CNN).
    pub heavy_workers: usize,
    /// Workers for clicks (the mask decoder).
    pub light_workers: usize,
    /// Requests allowed to wait per lane before 503.
    pub max_queue: usize,
    pub max_body_bytes: usize,
    /// Largest image accepted, in pixels (read from the header before decoding).
    pub max_pixels: u64,
    /// Time allowed per request (waiting and working) before 503.
    pub timeout: Duration,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8080,
            token: None,
            cors: None,
            cache_bytes: 2048 << 20,
            logits_bytes: 128 << 20,
            heavy_workers: 1,
            light_workers: 1,
            max_queue: 64,
            max_body_bytes: 32 << 20,
            max_pixels: 40_000_000,
            timeout: Duration::from_secs(120),
        }
    }
}

/// A U-Net with what its checkpoint recorded. Only the network is behind a lock (burn's module
/// is not `Sync`), so that reading the rest never waits for a prediction.
pub struct SemanticModel {
    pub predictor: Mutex<SemanticPredictor>,
    /// How the training masks' values became classes (to write them back), when known.
    pub labels: Option<LabelConvention>,
    pub num_classes: usize,
}

/// The models a server holds; at least one.
#[derive(Default)]
pub struct Models {
    pub sam: Option<AnySam>,
    pub semantic: Option<SemanticModel>,
    pub instances: Option<MaskRcnn>,
}

/// An uploaded image with its embedding (for SAM), as the cache keeps it.
pub struct CachedImage {
    pub id: String,
    pub width: usize,
    pub height: usize,
    /// 8-bit RGB, for the automatic generator's crops.
    pub rgb: Vec<u8>,
    pub embedding: ImageEmbedding,
}

impl CachedImage {
    /// What it holds, for the cache's bound.
    pub fn bytes(&self) -> usize {
        let e = &self.embedding;
        let high = e
            .high_res
            .as_ref()
            .map(|h| (h.0.len() + h.1.len()) * 4)
            .unwrap_or(0);
        // The decoder keeps a row-major copy of the features and its own projections of them.
        self.rgb.len() + 3 * e.features.len() * 4 + high
    }
}

/// Low-resolution logits kept for `mask_input_id`.
pub struct StoredLogits {
    pub image_id: String,
    pub logits: Vec<f32>,
}

type Pending = tokio::sync::watch::Receiver<Option<Result<Arc<CachedImage>, error::ApiError>>>;

/// Everything the handlers share.
pub struct State {
    pub config: ServeConfig,
    pub models: Models,
    pub images: Mutex<cache::Lru<Arc<CachedImage>>>,
    /// Encoder runs under way, by image id, so that concurrent uploads of one image share one.
    pub pending: Mutex<HashMap<String, Pending>>,
    pub logits: Mutex<cache::Lru<Arc<StoredLogits>>>,
    pub jobs: jobs::Jobs,
    pub heavy: pool::Lane,
    pub light: pool::Lane,
    pub metrics: metrics::Metrics,
}

impl State {
    /// Each lane gets its own compute threads, as many as rayon's global pool has; the heavy
    /// lane's at a lower priority (nice +10), so that clicks take the cores from an encoder.
    pub fn new(config: ServeConfig, models: Models) -> Result<Self> {
        let threads = rayon::current_num_threads();
        Ok(Self {
            images: Mutex::new(cache::Lru::new(config.cache_bytes)),
            pending: Mutex::new(HashMap::new()),
            logits: Mutex::new(cache::Lru::new(config.logits_bytes)),
            jobs: jobs::Jobs::default(),
            heavy: pool::Lane::with_own_threads(
                "heavy",
                config.heavy_workers,
                config.max_queue,
                threads,
                10,
            )?,
            light: pool::Lane::with_own_threads(
                "light",
                config.light_workers,
                config.max_queue,
                threads,
                0,
            )?,
            metrics: metrics::Metrics::default(),
            config,
            models,
        })
    }

    /// Puts an image and its embedding (e.g. read from an embedding file) into the cache.
    pub fn warm(&self, image: CachedImage) {
        let bytes = image.bytes();
        self.images
            .lock()
            .unwrap()
            .insert(image.id.clone(), Arc::new(image), bytes);
    }

    pub fn gauges(&self) -> metrics::Gauges {
        let images = self.images.lock().unwrap();
        let logits = self.logits.lock().unwrap();
        metrics::Gauges {
            lanes: [&self.heavy, &self.light]
                .iter()
                .map(|l| (l.name, l.waiting(), l.running(), l.workers()))
                .collect(),
            cache_entries: images.len(),
            cache_bytes: images.bytes(),
            cache_capacity: images.capacity(),
            cache_evictions: images.evictions(),
            logits_entries: logits.len(),
            logits_bytes: logits.bytes(),
            jobs: self.jobs.len(),
        }
    }
}

/// The content hash that names an image: SHA-256 of its bytes, in hex.
pub fn image_id(bytes: &[u8]) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(bytes);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// A random id for logits and jobs (not guessable from other ids).
pub fn random_id() -> String {
    use rand::Rng;
    let v: u128 = rand::rng().random();
    format!("{v:032x}")
}

/// Binds, calls `on_listen` with the bound address (the port may have been 0), and serves until
/// SIGTERM or Ctrl-C (then calls `on_stop`); requests under way are finished before it returns.
pub fn run(
    state: State,
    on_listen: impl FnOnce(SocketAddr),
    on_stop: impl FnOnce() + Send + 'static,
) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(64)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let state = Arc::new(state);
    let result = rt.block_on(async {
        let addr = format!("{}:{}", state.config.host, state.config.port);
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        on_listen(listener.local_addr()?);
        axum::serve(listener, api::router(state.clone()))
            .with_graceful_shutdown(async move {
                shutdown_signal().await;
                on_stop();
            })
            .await
            .context("serving")
    });
    rt.shutdown_timeout(Duration::from_secs(30));
    result
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// The image paths and embedding files given to warm the cache.
pub type WarmList = Vec<(PathBuf, PathBuf)>;
