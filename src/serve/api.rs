//! The routes. Every answer is JSON (or a PNG where asked), every error a JSON error with the
//! status that names its kind; no request can name a file on the server.

use super::error::{ApiError, ApiResult};
use super::jobs::JobState;
use super::{CachedImage, State, StoredLogits, image_id, page, random_id};
use crate::data::image_io::{decode_image, encode_label_png, encode_png};
use crate::formats::coco::encode_threshold_rowmajor;
use crate::models::mask_rcnn::MaskRcnnConfig;
use crate::sam::any_model::AnySam;
use crate::sam::automatic::{AmgConfig, generate_from};
use crate::sam::predictor::Prompt;
use crate::sam::sam2_predictor::Postprocess;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Query, Request};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

type S = axum::extract::State<Arc<State>>;
type Body = Result<Bytes, BytesRejection>;

/// The server's routes and middleware.
pub fn router(state: Arc<State>) -> Router {
    let api = Router::new()
        .route("/v1/images", post(upload))
        .route("/v1/images/{id}", get(image_info))
        .route("/v1/sam/predict", post(sam_predict))
        .route("/v1/sam/auto", post(sam_auto))
        .route("/v1/jobs/{id}", get(job))
        .route("/v1/semantic/predict", post(semantic_predict))
        .route("/v1/instances/predict", post(instances_predict))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), deadline))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .merge(api)
        .route("/", get(page::index))
        .route("/app.js", get(page::script))
        .route("/style.css", get(page::style))
        .route("/healthz", get(healthz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), oversized))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

async fn not_found(req: Request) -> ApiError {
    ApiError::not_found(format!("no route {} {}", req.method(), req.uri().path()))
}

async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}

/// Counts and times every answer; adds the CORS headers when `--cors` allows the origin.
async fn observe(s: S, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let origin = req.headers().get(header::ORIGIN).cloned();
    let allowed = match (&s.config.cors, &origin) {
        (Some(a), Some(o)) if a == "*" || o.as_bytes() == a.as_bytes() => Some(o.clone()),
        _ => None,
    };
    let t = Instant::now();
    let mut r = if req.method() == Method::OPTIONS && allowed.is_some() {
        StatusCode::NO_CONTENT.into_response()
    } else {
        next.run(req).await
    };
    if let Some(o) = allowed {
        let h = r.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
    }
    if r.status() == StatusCode::SERVICE_UNAVAILABLE {
        s.metrics.rejected_busy.fetch_add(1, Ordering::Relaxed);
    }
    s.metrics
        .observe(&route, r.status().as_u16(), t.elapsed().as_secs_f64());
    r
}

/// `Authorization: Bearer TOKEN` when the server has a token (compared in constant time).
async fn auth(s: S, req: Request, next: Next) -> Response {
    if let Some(token) = &s.config.token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        let same = given.len() == token.len()
            && given
                .bytes()
                .zip(token.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if !same {
            // Read what the client is sending (up to the upload limit) before answering: a
            // connection closed on an unread upload reaches the client as a broken pipe or a
            // reset instead of this 401.
            drain(req.into_body(), s.config.max_body_bytes).await;
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(req).await
}

/// A body that declares more than the upload limit is answered 413 at once, after reading
/// and dropping what the client sends (up to a bound): a connection closed on an unread upload
/// reaches the client as a broken pipe or a reset instead of the answer.
async fn oversized(s: S, req: Request, next: Next) -> Response {
    let limit = s.config.max_body_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n > limit as u64 => {
            drain(req.into_body(), limit.saturating_mul(8).max(64 << 20)).await;
            ApiError::too_large(format!(
                "the request body is over the limit: {n} bytes, the limit is {limit}"
            ))
            .into_response()
        }
        _ => next.run(req).await,
    }
}

/// Reads and drops up to `max` bytes of `body` (or until it ends or fails).
async fn drain(body: axum::body::Body, max: usize) {
    use http_body_util::BodyExt;
    let mut body = body;
    let mut seen = 0usize;
    while seen < max {
        match body.frame().await {
            Some(Ok(frame)) => seen += frame.data_ref().map_or(0, |d| d.len()),
            _ => break,
        }
    }
}

/// The per-request time limit (waiting and working).
async fn deadline(s: S, req: Request, next: Next) -> Response {
    let limit = s.config.timeout;
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::busy(
            format!(
                "the request took longer than {} s; work already started goes on (an uploaded image is still cached), retry shortly",
                limit.as_secs_f64()
            ),
            5,
        )
        .into_response(),
    }
}

fn body_bytes(body: Body) -> ApiResult<Bytes> {
    let b = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(format!(
                "the request body is over the limit: {}",
                e.body_text()
            ))
        } else {
            ApiError::bad_request(format!("cannot read the request body: {}", e.body_text()))
        }
    })?;
    if b.is_empty() {
        return Err(ApiError::bad_request("empty request body"));
    }
    Ok(b)
}

fn json_body<T: serde::de::DeserializeOwned>(body: Body) -> ApiResult<T> {
    let b = body_bytes(body)?;
    serde_json::from_slice(&b)
        .map_err(|e| ApiError::bad_request(format!("malformed JSON request: {e}")))
}

fn sam(s: &State) -> ApiResult<&AnySam> {
    s.models.sam.as_ref().ok_or_else(|| {
        ApiError::not_found("no SAM model is loaded (start the server with --sam CHECKPOINT)")
    })
}

fn cached(s: &State, id: &str) -> ApiResult<Arc<CachedImage>> {
    s.images.lock().unwrap().get(id).ok_or_else(|| {
        ApiError::not_found(format!(
            "unknown image_id {id:?}: upload the image with POST /v1/images (it may have left the cache)"
        ))
    })
}

/// Decodes and encodes one image on the heavy lane (blocking).
fn encode_image(s: &State, id: String, bytes: &[u8]) -> ApiResult<CachedImage> {
    let sam = sam(s)?;
    let pic = decode_image(bytes, "the uploaded image", Some(s.config.max_pixels))
        .map_err(|e| ApiError::bad_request(format!("{e:#}")))?;
    let rgb = pic.to_rgb8();
    s.metrics.encoder_runs.fetch_add(1, Ordering::Relaxed);
    let embedding = sam
        .set_image(&rgb, pic.height, pic.width)
        .map_err(|e| ApiError::bad_request(format!("the uploaded image: {e:#}")))?;
    Ok(CachedImage {
        id,
        width: pic.width,
        height: pic.height,
        rgb,
        embedding,
    })
}

/// The cached image for these bytes, encoding it when it is new; concurrent uploads of the same
/// image share one encoder run. `true` when no encoder run was started for this request.
async fn embed(s: &Arc<State>, bytes: Bytes) -> ApiResult<(Arc<CachedImage>, bool)> {
    sam(s)?;
    let id = image_id(&bytes);
    let (mut rx, shared) = {
        let mut pending = s.pending.lock().unwrap();
        if let Some(img) = s.images.lock().unwrap().get(&id) {
            s.metrics.cache_hits.fetch_add(1, Ordering::Relaxed);
            return Ok((img, true));
        }
        match pending.get(&id) {
            Some(rx) => {
                s.metrics.cache_hits.fetch_add(1, Ordering::Relaxed);
                (rx.clone(), true)
            }
            None => {
                let ticket = s.heavy.admit()?;
                s.metrics.cache_misses.fetch_add(1, Ordering::Relaxed);
                let (tx, rx) = tokio::sync::watch::channel(None);
                pending.insert(id.clone(), rx.clone());
                let s2 = s.clone();
                tokio::spawn(async move {
                    let s3 = s2.clone();
                    let key = id.clone();
                    let r = ticket
                        .run(move || encode_image(&s3, key, &bytes))
                        .await
                        .and_then(|r| r)
                        .map(Arc::new);
                    if let Ok(img) = &r {
                        let n = img.bytes();
                        s2.images.lock().unwrap().insert(id.clone(), img.clone(), n);
                    }
                    s2.pending.lock().unwrap().remove(&id);
                    let _ = tx.send(Some(r));
                });
                (rx, false)
            }
        }
    };
    loop {
        if let Some(r) = rx.borrow_and_update().clone() {
            return r.map(|img| (img, shared));
        }
        rx.changed()
            .await
            .map_err(|_| ApiError::internal("the encoder run was lost"))?;
    }
}

fn image_json(s: &State, img: &CachedImage, cached: bool) -> Value {
    json!({
        "image_id": img.id,
        "width": img.width,
        "height": img.height,
        "cached": cached,
        "model": s.models.sam.as_ref().map(|m| m.variant().to_string()),
    })
}

/// `POST /v1/images`: the image's bytes -> `{image_id, width, height, cached}`.
async fn upload(s: S, body: Body) -> ApiResult<axum::Json<Value>> {
    let bytes = body_bytes(body)?;
    let (img, cached) = embed(&s.0, bytes).await?;
    Ok(axum::Json(image_json(&s, &img, cached)))
}

/// `GET /v1/images/{id}`: whether an image is cached.
async fn image_info(s: S, Path(id): Path<String>) -> ApiResult<axum::Json<Value>> {
    let img = cached(&s, &id)?;
    Ok(axum::Json(image_json(&s, &img, true)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PredictRequest {
    image_id: String,
    /// `[[x, y], ...]` in image pixels.
    #[serde(default)]
    points: Vec<Vec<f64>>,
    labels: Option<Vec<i32>>,
    /// `[x0, y0, x1, y1]`.
    #[serde(rename = "box")]
    bbox: Option<Vec<f64>>,
    mask_input_id: Option<String>,
    #[serde(default)]
    multimask: bool,
    /// Also each mask as a base64 PNG.
    #[serde(default)]
    png: bool,
    #[serde(default)]
    max_hole_area: usize,
    #[serde(default)]
    max_sprinkle_area: usize,
    #[serde(default)]
    mask_threshold: f32,
}

/// A mask (logits above 0) as the API answers it: COCO RLE, area, `[x, y, w, h]` box.
fn mask_json(logits: &[f32], h: usize, w: usize) -> Value {
    let (rle, area, b) = encode_threshold_rowmajor(logits, h, w, 0.0);
    json!({
        "segmentation": {"size": [h, w], "counts": hotcoco::mask::rle_to_string(&rle)},
        "area": area,
        "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
    })
}

/// `POST /v1/sam/predict`: masks for one prompt set on a cached image.
async fn sam_predict(s: S, body: Body) -> ApiResult<axum::Json<Value>> {
    let req: PredictRequest = json_body(body)?;
    sam(&s)?;
    let img = cached(&s, &req.image_id)?;
    let labels = match &req.labels {
        None => vec![1; req.points.len()],
        Some(l) if l.len() == req.points.len() => l.clone(),
        Some(l) => {
            return Err(ApiError::bad_request(format!(
                "{} labels for {} points: give one label per point (or none for all 1)",
                l.len(),
                req.points.len()
            )));
        }
    };
    let mask_input = match &req.mask_input_id {
        None => None,
        Some(id) => {
            let l = s.logits.lock().unwrap().get(id).ok_or_else(|| {
                ApiError::not_found(format!(
                    "unknown mask_input_id {id:?} (logits are kept for a while only)"
                ))
            })?;
            if l.image_id != req.image_id {
                return Err(ApiError::bad_request(format!(
                    "mask_input_id {id:?} belongs to another image"
                )));
            }
            Some(l.logits.clone())
        }
    };
    if let Some((i, p)) = req.points.iter().enumerate().find(|(_, p)| p.len() != 2) {
        return Err(ApiError::bad_request(format!(
            "point {i} has {} numbers; a point is [x, y]",
            p.len()
        )));
    }
    let bbox = match &req.bbox {
        None => None,
        Some(b) if b.len() == 4 => Some([b[0], b[1], b[2], b[3]]),
        Some(b) => {
            return Err(ApiError::bad_request(format!(
                "the box has {} numbers; a box is [x0, y0, x1, y1]",
                b.len()
            )));
        }
    };
    let prompt = Prompt {
        points: req
            .points
            .iter()
            .zip(&labels)
            .map(|(p, &l)| (p[0], p[1], l))
            .collect(),
        bbox,
        mask_input,
    };
    prompt
        .check((img.height, img.width))
        .map_err(|e| ApiError::bad_request(format!("{e:#}")))?;
    if !req.mask_threshold.is_finite() {
        return Err(ApiError::bad_request("mask_threshold must be finite"));
    }
    let post = Postprocess {
        mask_threshold: req.mask_threshold,
        max_hole_area: req.max_hole_area,
        max_sprinkle_area: req.max_sprinkle_area,
    };
    let state = s.0.clone();
    let image = img.clone();
    let (multimask, png) = (req.multimask, req.png);
    // The decoder and the answer's masks (RLE, PNG) both on the clicks' lane.
    let (pred, mut masks, decoder_ms) = s
        .light
        .run(move || -> ApiResult<_> {
            state.metrics.decoder_runs.fetch_add(1, Ordering::Relaxed);
            let t = Instant::now();
            let pred = sam(&state)?
                .predict(&image.embedding, &prompt, multimask, &post)
                .map_err(|e| ApiError::bad_request(format!("{e:#}")))?;
            let decoder_ms = t.elapsed().as_secs_f64() * 1e3;
            use rayon::prelude::*;
            let (h, w) = (image.height, image.width);
            let masks = (0..pred.logits.len())
                .into_par_iter()
                .map(|i| {
                    let mut v = mask_json(&pred.logits[i], h, w);
                    if png {
                        use base64::Engine;
                        let px: Vec<u8> = pred.mask(i).iter().map(|&v| v * 255).collect();
                        let bytes = encode_png(w, h, 1, &px)
                            .map_err(|e| ApiError::internal(format!("{e:#}")))?;
                        v["png"] = json!(base64::engine::general_purpose::STANDARD.encode(bytes));
                    }
                    Ok(v)
                })
                .collect::<ApiResult<Vec<Value>>>()?;
            Ok((pred, masks, decoder_ms))
        })
        .await??;
    let (h, w) = (img.height, img.width);
    for (i, v) in masks.iter_mut().enumerate() {
        v["score"] = json!(pred.scores[i]);
        let logits_id = random_id();
        let bytes = pred.low_res[i].len() * 4;
        s.logits.lock().unwrap().insert(
            logits_id.clone(),
            Arc::new(StoredLogits {
                image_id: img.id.clone(),
                logits: pred.low_res[i].clone(),
            }),
            bytes,
        );
        v["logits_id"] = json!(logits_id);
    }
    Ok(axum::Json(json!({
        "image_id": img.id,
        "width": w,
        "height": h,
        "model": sam(&s)?.variant(),
        "masks": masks,
        "object_score": pred.object_score,
        "decoder_ms": decoder_ms,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AutoRequest {
    image_id: String,
    points_per_side: Option<usize>,
    points_per_batch: Option<usize>,
    pred_iou_thresh: Option<f32>,
    stability_score_thresh: Option<f32>,
    stability_score_offset: Option<f32>,
    box_nms_thresh: Option<f32>,
    crop_n_layers: Option<usize>,
    crop_nms_thresh: Option<f32>,
    crop_overlap_ratio: Option<f64>,
    crop_n_points_downscale_factor: Option<usize>,
    min_mask_region_area: Option<usize>,
    use_m2m: Option<bool>,
    multimask_output: Option<bool>,
    mask_threshold: Option<f32>,
}

/// The most grid points per side a request may ask for.
pub const MAX_POINTS_PER_SIDE: usize = 128;

impl AutoRequest {
    fn config(&self, sam: &AnySam) -> ApiResult<AmgConfig> {
        let d = match sam {
            AnySam::Sam(_) => AmgConfig::default(),
            AnySam::Sam2(_) => AmgConfig::sam2(),
        };
        let c = AmgConfig {
            points_per_side: self.points_per_side.unwrap_or(d.points_per_side),
            points_per_batch: self.points_per_batch.unwrap_or(d.points_per_batch),
            pred_iou_thresh: self.pred_iou_thresh.unwrap_or(d.pred_iou_thresh),
            stability_score_thresh: self
                .stability_score_thresh
                .unwrap_or(d.stability_score_thresh),
            stability_score_offset: self
                .stability_score_offset
                .unwrap_or(d.stability_score_offset),
            box_nms_thresh: self.box_nms_thresh.unwrap_or(d.box_nms_thresh),
            crop_n_layers: self.crop_n_layers.unwrap_or(d.crop_n_layers),
            crop_nms_thresh: self.crop_nms_thresh.unwrap_or(d.crop_nms_thresh),
            crop_overlap_ratio: self.crop_overlap_ratio.unwrap_or(d.crop_overlap_ratio),
            crop_n_points_downscale_factor: self
                .crop_n_points_downscale_factor
                .unwrap_or(d.crop_n_points_downscale_factor),
            min_mask_region_area: self.min_mask_region_area.unwrap_or(d.min_mask_region_area),
            mask_threshold: self.mask_threshold.unwrap_or(d.mask_threshold),
            use_m2m: self.use_m2m.unwrap_or(d.use_m2m),
            multimask_output: self.multimask_output.unwrap_or(d.multimask_output),
        };
        if c.points_per_side == 0 || c.points_per_side > MAX_POINTS_PER_SIDE {
            return Err(ApiError::bad_request(format!(
                "points_per_side {} is outside 1..={MAX_POINTS_PER_SIDE}",
                c.points_per_side
            )));
        }
        if c.points_per_batch == 0 || c.points_per_batch > 1024 {
            return Err(ApiError::bad_request(format!(
                "points_per_batch {} is outside 1..=1024",
                c.points_per_batch
            )));
        }
        if c.crop_n_layers > 2 {
            return Err(ApiError::bad_request(format!(
                "crop_n_layers {} is more than this server runs (0-2)",
                c.crop_n_layers
            )));
        }
        let finite = [
            c.pred_iou_thresh,
            c.stability_score_thresh,
            c.stability_score_offset,
            c.box_nms_thresh,
            c.crop_nms_thresh,
            c.mask_threshold,
        ]
        .iter()
        .all(|v| v.is_finite())
            && c.crop_overlap_ratio.is_finite()
            && (0.0..1.0).contains(&c.crop_overlap_ratio);
        if !finite {
            return Err(ApiError::bad_request(
                "thresholds must be finite and crop_overlap_ratio in [0, 1)",
            ));
        }
        Ok(c)
    }
}

/// `POST /v1/sam/auto`: starts the automatic mask generator on a cached image; 202 with a job
/// id to poll at `/v1/jobs/{id}`.
async fn sam_auto(s: S, body: Body) -> ApiResult<Response> {
    let req: AutoRequest = json_body(body)?;
    let cfg = req.config(sam(&s)?)?;
    let img = cached(&s, &req.image_id)?;
    let ticket = s.heavy.admit()?;
    let job = s
        .jobs
        .start(random_id(), img.id.clone())
        .ok_or_else(|| ApiError::busy("too many automatic-mask jobs under way", 5))?;
    let state = s.0.clone();
    let j = job.clone();
    tokio::spawn(async move {
        let st = state.clone();
        let jj = j.clone();
        let r = ticket
            .run(move || {
                jj.set(JobState::Running);
                st.metrics.auto_runs.fetch_add(1, Ordering::Relaxed);
                let sam = sam(&st)?;
                let progress = |done: usize, total: usize| {
                    jj.total.store(total, Ordering::Relaxed);
                    jj.done.store(done, Ordering::Relaxed);
                };
                generate_from(
                    sam,
                    &img.rgb,
                    img.height,
                    img.width,
                    &cfg,
                    Some(&img.embedding),
                    &progress,
                )
                .map_err(|e| ApiError::bad_request(format!("{e:#}")))
            })
            .await
            .and_then(|r| r);
        j.set(match r {
            Ok(recs) => JobState::Done(Arc::new(Value::Array(
                recs.iter().map(|r| r.to_json()).collect(),
            ))),
            Err(e) => JobState::Failed(e.message),
        });
    });
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(
            json!({"job_id": job.id, "state": "queued", "poll": format!("/v1/jobs/{}", job.id)}),
        ),
    )
        .into_response())
}

/// `GET /v1/jobs/{id}`: a job's state and progress; its masks once done.
async fn job(s: S, Path(id): Path<String>) -> ApiResult<axum::Json<Value>> {
    let j = s
        .jobs
        .get(&id)
        .ok_or_else(|| ApiError::not_found(format!("unknown job {id:?}")))?;
    Ok(axum::Json(j.to_json()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SemanticQuery {
    /// Write the values the training masks stored instead of class indices.
    #[serde(default)]
    label_ids: bool,
}

/// `POST /v1/semantic/predict`: the image's bytes -> the label map as an index PNG (class per
/// pixel at the image's size), as `segrs predict` writes it.
async fn semantic_predict(
    s: S,
    q: Result<Query<SemanticQuery>, axum::extract::rejection::QueryRejection>,
    body: Body,
) -> ApiResult<Response> {
    let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    if s.models.semantic.is_none() {
        return Err(ApiError::not_found(
            "no U-Net is loaded (start the server with --unet CHECKPOINT)",
        ));
    }
    let bytes = body_bytes(body)?;
    let state = s.0.clone();
    let png = s
        .heavy
        .run(move || -> ApiResult<Vec<u8>> {
            let pic = decode_image(&bytes, "the uploaded image", Some(state.config.max_pixels))
                .map_err(|e| ApiError::bad_request(format!("{e:#}")))?;
            let m = state.models.semantic.as_ref().unwrap();
            let mut labels = m.predictor.lock().unwrap().predict(&pic);
            if q.label_ids {
                let conv = m.labels.as_ref().ok_or_else(|| {
                    ApiError::bad_request(
                        "label_ids needs a segrs checkpoint (it records how masks became classes)",
                    )
                })?;
                labels
                    .data
                    .iter_mut()
                    .for_each(|v| *v = conv.stored_value(*v));
            }
            encode_label_png(&labels).map_err(|e| ApiError::internal(format!("{e:#}")))
        })
        .await??;
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
    Ok((headers, png).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InstancesQuery {
    /// The `image_id` written into the records.
    #[serde(default)]
    image_id: u64,
    score_thresh: Option<f32>,
    detections: Option<usize>,
    /// Short side after resizing (torchvision's `min_size`, 800).
    min_size: Option<usize>,
    /// Long side at most (torchvision's `max_size`, 1333).
    max_size: Option<usize>,
}

/// `POST /v1/instances/predict`: the image's bytes -> COCO results records (RLE masks, boxes,
/// scores), as `segrs maskrcnn predict` writes them.
async fn instances_predict(
    s: S,
    q: Result<Query<InstancesQuery>, axum::extract::rejection::QueryRejection>,
    body: Body,
) -> ApiResult<axum::Json<Value>> {
    let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    if s.models.instances.is_none() {
        return Err(ApiError::not_found(
            "no Mask R-CNN is loaded (start the server with --maskrcnn CHECKPOINT)",
        ));
    }
    let mut cfg = MaskRcnnConfig::default();
    if let Some(t) = q.score_thresh {
        if !(0.0..=1.0).contains(&t) {
            return Err(ApiError::bad_request(format!(
                "score_thresh {t} is outside [0, 1]"
            )));
        }
        cfg.boxes.score_thresh = t;
    }
    if let Some(d) = q.detections {
        if d == 0 || d > 1000 {
            return Err(ApiError::bad_request(format!(
                "detections {d} is outside 1..=1000"
            )));
        }
        cfg.boxes.detections_per_img = d;
    }
    cfg.transform.min_size = q.min_size.unwrap_or(cfg.transform.min_size);
    cfg.transform.max_size = q.max_size.unwrap_or(cfg.transform.max_size);
    let (lo, hi) = (cfg.transform.min_size, cfg.transform.max_size);
    if lo == 0 || hi < lo || hi > 4096 {
        return Err(ApiError::bad_request(format!(
            "min_size {lo} / max_size {hi}: need 0 < min_size <= max_size <= 4096"
        )));
    }
    let bytes = body_bytes(body)?;
    let state = s.0.clone();
    let records = s
        .heavy
        .run(move || -> ApiResult<Vec<Value>> {
            let pic = decode_image(&bytes, "the uploaded image", Some(state.config.max_pixels))
                .map_err(|e| ApiError::bad_request(format!("{e:#}")))?;
            let rgb = pic.to_rgb8();
            let model = state.models.instances.as_ref().unwrap();
            let p = model
                .predict(&rgb, pic.height, pic.width, &cfg)
                .map_err(|e| ApiError::bad_request(format!("{e:#}")))?;
            (0..p.boxes.len())
                .map(|i| {
                    p.result_record(i, q.image_id, "")
                        .map_err(|e| ApiError::internal(format!("{e:#}")))
                })
                .collect()
        })
        .await??;
    Ok(axum::Json(Value::Array(records)))
}

/// `GET /healthz`: up, and with which models.
async fn healthz(s: S) -> axum::Json<Value> {
    let m = &s.models;
    axum::Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "models": {
            "sam": m.sam.as_ref().map(|x| x.variant().to_string()),
            "unet": m.semantic.as_ref().map(|x| json!({"classes": x.num_classes})),
            "maskrcnn": m.instances.as_ref().map(|x| json!({"classes": x.num_classes})),
        },
        "limits": {
            "max_body_bytes": s.config.max_body_bytes,
            "max_pixels": s.config.max_pixels,
            "timeout_s": s.config.timeout.as_secs_f64(),
        },
        "auth": s.config.token.is_some(),
    }))
}

/// `GET /metrics`: Prometheus text.
async fn metrics(s: S) -> Response {
    let text = s.metrics.render(&s.gauges());
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    (headers, text).into_response()
}
