//! `segrs serve` end to end: the binary started on a free loopback port with the reduced SAM
//! fixture (and a U-Net and a Mask R-CNN), every route and error status, the content-hash
//! cache seen in /metrics, masks equal to what `segrs sam` / `segrs predict` / `segrs maskrcnn
//! predict` write for the same input, malformed input at every route, overload (503), CORS, and
//! a graceful SIGTERM that finishes the requests under way.

use crate::common::{fixtures, hashed_weights, segrs, tmp};
use segrs::data::image_io::read_mask;
use serde_json::{Value, json};
use std::io::{BufRead, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `segrs serve` process on a free loopback port (killed when dropped).
pub struct Server {
    child: Child,
    pub base: String,
}

impl Server {
    pub fn start(args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_segrs"))
            .args(["serve", "--port", "0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start segrs serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(i) = line.find("http://") {
                    let _ = tx.send(line[i..].trim().to_string());
                }
            }
        });
        let base = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("segrs serve did not print its address");
        Server { child, base }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Waits for the process to end by itself; its exit code.
    fn wait(mut self, limit: Duration) -> i32 {
        let t = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code().unwrap_or(-1);
            }
            assert!(t.elapsed() < limit, "segrs serve did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP answer.
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub retry_after: Option<String>,
    pub allow_origin: Option<String>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} answer is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// A 4xx JSON error with a message; the message.
    fn error(&self, status: u16) -> String {
        assert_eq!(
            self.status,
            status,
            "{}",
            String::from_utf8_lossy(&self.body)
        );
        assert!(self.content_type.starts_with("application/json"));
        let m = self.json()["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(!m.is_empty(), "an error names the problem");
        m
    }
}

pub fn call(method: &str, url: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Reply {
    let mut r = ureq::request(method, url).timeout(Duration::from_secs(300));
    for (k, v) in headers {
        r = r.set(k, v);
    }
    let res = match body {
        Some(b) => r.send_bytes(b),
        None => r.call(),
    };
    let resp = match res {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    let header = |n: &str| resp.header(n).map(|s| s.to_string());
    let (status, content_type, retry_after, allow_origin) = (
        resp.status(),
        header("content-type").unwrap_or_default(),
        header("retry-after"),
        header("access-control-allow-origin"),
    );
    let mut body = Vec::new();
    resp.into_reader().read_to_end(&mut body).unwrap();
    Reply {
        status,
        content_type,
        retry_after,
        allow_origin,
        body,
    }
}

fn post_json(s: &Server, path: &str, v: &Value, auth: &[(&str, &str)]) -> Reply {
    let mut h = vec![("Content-Type", "application/json")];
    h.extend_from_slice(auth);
    call("POST", &s.url(path), &h, Some(v.to_string().as_bytes()))
}

/// The row-major 0/1 mask of an answer's COCO RLE.
pub fn mask_of(m: &Value) -> (Vec<u8>, usize, usize) {
    let seg = &m["segmentation"];
    let (h, w) = (
        seg["size"][0].as_u64().unwrap() as u32,
        seg["size"][1].as_u64().unwrap() as u32,
    );
    let rle = hotcoco::mask::rle_from_string(seg["counts"].as_str().unwrap(), h, w).unwrap();
    (
        segrs::formats::coco::decode_rowmajor(&rle),
        h as usize,
        w as usize,
    )
}

/// A written mask PNG as 0/1.
fn png_mask(p: &Path) -> Vec<u8> {
    read_mask(p)
        .unwrap()
        .data
        .iter()
        .map(|&v| (v > 0) as u8)
        .collect()
}

fn metric(text: &str, line_start: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no metric {line_start} in\n{text}"))
}

fn wait_job(s: &Server, id: &str, auth: &[(&str, &str)]) -> Value {
    let t = Instant::now();
    loop {
        let j = call("GET", &s.url(&format!("/v1/jobs/{id}")), auth, None).json();
        match j["state"].as_str().unwrap() {
            "done" => return j,
            "failed" => panic!("job failed: {j}"),
            _ => {}
        }
        assert!(t.elapsed() < Duration::from_secs(120), "job did not end");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `segrs sam --checkpoint CK --image IMG ARGS...`, which must succeed.
fn sam_cli(ck: &str, img: &str, args: &[&str]) {
    let (sub, rest) = match args.first() {
        Some(&"auto") => (vec!["sam", "auto"], &args[1..]),
        _ => (vec!["sam"], args),
    };
    let mut all = sub;
    all.extend_from_slice(&["--checkpoint", ck, "--image", img]);
    all.extend_from_slice(rest);
    let (code, o, e) = segrs(&all);
    assert_eq!(code, 0, "{o}{e}");
}

fn sam_fixture() -> (String, String) {
    (
        fixtures().join("sam/tiny_sam.pth").to_string_lossy().into(),
        fixtures().join("sam/wide.png").to_string_lossy().into(),
    )
}

#[test]
fn sam_routes_cache_and_masks_equal_the_cli() {
    let d = tmp("serve-api");
    let (ck, img) = sam_fixture();
    let s = Server::start(&["--sam", &ck, "--token", "secret"]);
    let auth = [("Authorization", "Bearer secret")];
    let bytes = std::fs::read(&img).unwrap();

    let h = call("GET", &s.url("/healthz"), &[], None);
    assert_eq!(h.status, 200);
    assert_eq!(h.json()["auth"], json!(true));
    assert!(h.allow_origin.is_none(), "no CORS unless --cors");
    let page = call("GET", &s.url("/"), &[], None);
    assert_eq!(page.status, 200);
    assert!(String::from_utf8_lossy(&page.body).contains("/app.js"));
    for a in [vec![], vec![("Authorization", "Bearer wrong")]] {
        call("POST", &s.url("/v1/images"), &a, Some(&bytes)).error(401);
        call("GET", &s.url("/metrics"), &a, None).error(401);
    }

    // Upload twice: one encoder run, the second answered from the cache.
    let up = call("POST", &s.url("/v1/images"), &auth, Some(&bytes)).json();
    assert_eq!(
        (up["width"].as_u64(), up["height"].as_u64()),
        (Some(150), Some(97))
    );
    assert_eq!(up["cached"], json!(false));
    let id = up["image_id"].as_str().unwrap().to_string();
    let again = call("POST", &s.url("/v1/images"), &auth, Some(&bytes)).json();
    assert_eq!(
        (again["image_id"].as_str(), &again["cached"]),
        (Some(id.as_str()), &json!(true))
    );
    let m = String::from_utf8(call("GET", &s.url("/metrics"), &auth, None).body).unwrap();
    assert_eq!(metric(&m, "segrs_encoder_runs_total"), 1.0);
    assert_eq!(metric(&m, "segrs_embedding_cache_hits_total"), 1.0);
    assert_eq!(metric(&m, "segrs_embedding_cache_entries"), 1.0);
    assert_eq!(
        metric(
            &m,
            "segrs_requests_total{route=\"/v1/images\",status=\"200\"}"
        ),
        2.0
    );
    assert_eq!(
        metric(
            &m,
            "segrs_requests_total{route=\"/v1/images\",status=\"401\"}"
        ),
        2.0
    );
    assert_eq!(
        call("GET", &s.url(&format!("/v1/images/{id}")), &auth, None).status,
        200
    );
    // Concurrent uploads of a new image share one encoder run.
    let tall = std::fs::read(fixtures().join("sam/tall.png")).unwrap();
    let ids: Vec<String> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..4)
            .map(|_| {
                sc.spawn(|| {
                    call("POST", &s.url("/v1/images"), &auth, Some(&tall)).json()["image_id"]
                        .as_str()
                        .unwrap()
                        .to_string()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(ids.iter().all(|i| i == &ids[0]) && ids[0] != id);

    // A click with three masks: the same as `segrs sam`, in RLE and in PNG.
    let one = d.join("one");
    sam_cli(
        &ck,
        &img,
        &[
            "--point",
            "45,29",
            "--multimask",
            "--out",
            one.to_str().unwrap(),
        ],
    );
    let r = post_json(
        &s,
        "/v1/sam/predict",
        &json!({"image_id": id, "points": [[45, 29]], "multimask": true, "png": true}),
        &auth,
    )
    .json();
    let masks = r["masks"].as_array().unwrap();
    assert_eq!(masks.len(), 3);
    let cli: Value =
        serde_json::from_str(&std::fs::read_to_string(one.join("result.json")).unwrap()).unwrap();
    for (i, m) in masks.iter().enumerate() {
        let (mask, h, w) = mask_of(m);
        assert_eq!((h, w), (97, 150));
        assert_eq!(
            mask,
            png_mask(&one.join(format!("mask_{i}.png"))),
            "mask {i}"
        );
        let score = m["score"].as_f64().unwrap();
        assert!((score - cli["scores"][i].as_f64().unwrap()).abs() < 1e-5);
        use base64::Engine;
        let png = base64::engine::general_purpose::STANDARD
            .decode(m["png"].as_str().unwrap())
            .unwrap();
        let p = d.join(format!("api_{i}.png"));
        std::fs::write(&p, png).unwrap();
        assert_eq!(png_mask(&p), mask);
        assert_eq!(
            m["area"].as_u64().unwrap(),
            mask.iter().map(|&v| v as u64).sum::<u64>()
        );
    }
    // Refining with the best mask's logits = `segrs sam --mask-input` (which takes the best).
    let best = masks
        .iter()
        .max_by(|a, b| {
            a["score"]
                .as_f64()
                .unwrap()
                .total_cmp(&b["score"].as_f64().unwrap())
        })
        .unwrap();
    let two = d.join("two");
    sam_cli(
        &ck,
        &img,
        &[
            "--point",
            "45,29",
            "--point",
            "120,80",
            "--label",
            "1",
            "--label",
            "0",
            "--mask-input",
            one.join("low_res_logits.safetensors").to_str().unwrap(),
            "--out",
            two.to_str().unwrap(),
        ],
    );
    let r = post_json(
        &s,
        "/v1/sam/predict",
        &json!({"image_id": id, "points": [[45, 29], [120, 80]], "labels": [1, 0],
                "mask_input_id": best["logits_id"]}),
        &auth,
    )
    .json();
    assert_eq!(r["masks"].as_array().unwrap().len(), 1);
    assert_eq!(mask_of(&r["masks"][0]).0, png_mask(&two.join("mask_0.png")));
    // A box.
    let three = d.join("three");
    sam_cli(
        &ck,
        &img,
        &["--box", "20,10,100,80", "--out", three.to_str().unwrap()],
    );
    let r = post_json(
        &s,
        "/v1/sam/predict",
        &json!({"image_id": id, "box": [20, 10, 100, 80]}),
        &auth,
    )
    .json();
    assert_eq!(
        mask_of(&r["masks"][0]).0,
        png_mask(&three.join("mask_0.png"))
    );

    // Everything: a job with progress whose records are `segrs sam auto`'s.
    let auto = d.join("auto");
    sam_cli(
        &ck,
        &img,
        &[
            "auto",
            "--points-per-side",
            "6",
            "--out",
            auto.to_str().unwrap(),
        ],
    );
    let j = post_json(
        &s,
        "/v1/sam/auto",
        &json!({"image_id": id, "points_per_side": 6}),
        &auth,
    );
    assert_eq!(j.status, 202);
    let done = wait_job(&s, j.json()["job_id"].as_str().unwrap(), &auth);
    assert_eq!(done["done"], done["total"]);
    assert_eq!(done["total"].as_u64(), Some(36));
    let cli: Value =
        serde_json::from_str(&std::fs::read_to_string(auto.join("masks.json")).unwrap()).unwrap();
    let (a, b) = (done["masks"].as_array().unwrap(), cli.as_array().unwrap());
    assert_eq!(a.len(), b.len());
    assert!(!a.is_empty());
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x["segmentation"], y["segmentation"]);
        assert_eq!(x["bbox"], y["bbox"]);
    }
    let m = String::from_utf8(call("GET", &s.url("/metrics"), &auth, None).body).unwrap();
    assert_eq!(
        metric(&m, "segrs_encoder_runs_total"),
        2.0,
        "one run per image: auto reuses the embedding, concurrent uploads share a run"
    );
    assert_eq!(metric(&m, "segrs_embedding_cache_entries"), 2.0);
    assert_eq!(metric(&m, "segrs_auto_runs_total"), 1.0);
    assert!(metric(&m, "segrs_decoder_runs_total") >= 3.0);
    assert!(
        m.contains("segrs_request_duration_seconds_bucket{route=\"/v1/sam/predict\",le=\"+Inf\"}")
    );
}

#[test]
fn semantic_and_instance_routes_equal_the_cli() {
    let d = tmp("serve-models");
    let unet = fixtures().join("unet/tiny_bilinear.pth");
    let keys: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("maskrcnn/keys_v1.json")).unwrap(),
    )
    .unwrap();
    let rcnn = d.join("maskrcnn_v1.safetensors");
    segrs::weights::safetensors::write(
        &rcnn,
        &hashed_weights(&keys, "", "v1").tensors,
        &Default::default(),
    )
    .unwrap();
    let photo = fixtures().join("maskrcnn/coco.jpg");
    let s = Server::start(&[
        "--unet",
        unet.to_str().unwrap(),
        "--maskrcnn",
        rcnn.to_str().unwrap(),
    ]);
    let bytes = std::fs::read(&photo).unwrap();

    let r = call("POST", &s.url("/v1/semantic/predict"), &[], Some(&bytes));
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type, "image/png");
    let served = d.join("served.png");
    std::fs::write(&served, &r.body).unwrap();
    let out = d.join("predict");
    let (code, o, e) = segrs(&[
        "predict",
        "--checkpoint",
        unet.to_str().unwrap(),
        "--images",
        photo.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{o}{e}");
    assert_eq!(
        read_mask(&served).unwrap(),
        read_mask(&out.join("coco.png")).unwrap()
    );

    let r = call(
        "POST",
        &s.url("/v1/instances/predict?min_size=256&max_size=416&detections=20&image_id=7"),
        &[],
        Some(&bytes),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let served = r.json();
    let images = d.join("images");
    std::fs::create_dir_all(&images).unwrap();
    std::fs::copy(&photo, images.join("coco.jpg")).unwrap();
    let out = d.join("rcnn");
    let (code, o, e) = segrs(&[
        "maskrcnn",
        "predict",
        "--checkpoint",
        rcnn.to_str().unwrap(),
        "--images",
        images.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--min-size",
        "256",
        "--max-size",
        "416",
        "--detections",
        "20",
        "--no-overlays",
    ]);
    assert_eq!(code, 0, "{o}{e}");
    let cli: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let (a, b) = (served.as_array().unwrap(), cli.as_array().unwrap());
    assert_eq!(a.len(), b.len());
    assert!(!a.is_empty(), "hashed weights detect something");
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x["image_id"], json!(7));
        for k in ["category_id", "segmentation", "bbox", "score"] {
            assert_eq!(x[k], y[k], "{k}");
        }
    }
    // No SAM loaded: its routes say so.
    let m = call("POST", &s.url("/v1/images"), &[], Some(&bytes)).error(404);
    assert!(m.contains("--sam"), "{m}");
}

/// A PNG whose header claims `w x h` (valid chunk CRCs), with no pixel data worth the name.
fn png_claiming(w: u32, h: u32) -> Vec<u8> {
    let mut png = segrs::data::image_io::encode_png(1, 1, 1, &[0]).unwrap();
    // Signature (8), IHDR length (4), "IHDR" (4), width, height, ...
    png[16..20].copy_from_slice(&w.to_be_bytes());
    png[20..24].copy_from_slice(&h.to_be_bytes());
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    png
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in bytes {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 == 1 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

#[test]
fn malformed_input_gets_4xx_json_and_the_server_stays_up() {
    let (ck, img) = sam_fixture();
    let s = Server::start(&[
        "--sam",
        &ck,
        "--max-body-mb",
        "0.05",
        "--max-megapixels",
        "0.02",
        "--cors",
        "http://labeller.test",
    ]);
    let bytes = std::fs::read(&img).unwrap();
    let id = call("POST", &s.url("/v1/images"), &[], Some(&bytes)).json()["image_id"]
        .as_str()
        .unwrap()
        .to_string();
    let click = json!({"image_id": id, "points": [[45, 29]], "multimask": true});
    let baseline = post_json(&s, "/v1/sam/predict", &click, &[]).json()["masks"].clone();

    // Images: truncated, not an image, a huge image in a tiny file, over the size limits, empty.
    let m = call(
        "POST",
        &s.url("/v1/images"),
        &[],
        Some(&bytes[..bytes.len() / 2]),
    )
    .error(400);
    assert!(m.contains("the uploaded image"), "{m}");
    call(
        "POST",
        &s.url("/v1/images"),
        &[],
        Some(b"definitely not an image"),
    )
    .error(400);
    let m = call(
        "POST",
        &s.url("/v1/images"),
        &[],
        Some(&png_claiming(16000, 16000)),
    )
    .error(400);
    assert!(m.contains("over the limit"), "{m}");
    let m = call(
        "POST",
        &s.url("/v1/images"),
        &[],
        Some(&png_claiming(100_000, 1)),
    )
    .error(400);
    assert!(m.contains("limit per side"), "{m}");
    let big = vec![7u8; 80_000];
    call("POST", &s.url("/v1/images"), &[], Some(&big)).error(413);
    call("POST", &s.url("/v1/sam/predict"), &[], Some(&big)).error(413);
    call("POST", &s.url("/v1/images"), &[], Some(b"")).error(400);

    // JSON: malformed, wrong types, unknown fields, impossible prompts, unknown ids.
    let bad: Vec<(Value, u16, &str)> = vec![
        (json!({"image_id": 5}), 400, "invalid type"),
        (
            json!({"image_id": id, "points": [[1, 2, 3]]}),
            400,
            "a point is [x, y]",
        ),
        (json!({"image_id": id, "box": [1, 2, 3]}), 400, "a box is"),
        (
            json!({"image_id": id, "points": "45,29"}),
            400,
            "invalid type",
        ),
        (
            json!({"image_id": id, "pointz": [[1, 2]]}),
            400,
            "unknown field",
        ),
        (
            json!({"image_id": id, "points": [[450, 29]]}),
            400,
            "outside",
        ),
        (
            json!({"image_id": id, "points": [[-1, 29]]}),
            400,
            "outside",
        ),
        (
            json!({"image_id": id, "points": [[4, 2]], "labels": [1, 0]}),
            400,
            "labels",
        ),
        (
            json!({"image_id": id, "points": [[4, 2]], "labels": [2]}),
            400,
            "label 2",
        ),
        (
            json!({"image_id": id, "box": [100, 80, 20, 10]}),
            400,
            "box",
        ),
        (json!({"image_id": id}), 400, "empty prompt"),
        (
            json!({"image_id": "nope", "points": [[4, 2]]}),
            404,
            "unknown image_id",
        ),
        (
            json!({"image_id": id, "points": [[4, 2]], "mask_input_id": "nope"}),
            404,
            "mask_input_id",
        ),
    ];
    for (body, status, needle) in &bad {
        let m = post_json(&s, "/v1/sam/predict", body, &[]).error(*status);
        assert!(m.contains(needle), "{body}: {m}");
    }
    for raw in [&b"{\"image_id\": "[..], b"[1, 2", b"\xff\xfe", b"null"] {
        call("POST", &s.url("/v1/sam/predict"), &[], Some(raw)).error(400);
        call("POST", &s.url("/v1/sam/auto"), &[], Some(raw)).error(400);
    }
    for body in [
        json!({"image_id": id, "points_per_side": 0}),
        json!({"image_id": id, "points_per_side": 100000}),
        json!({"image_id": id, "crop_n_layers": 9}),
        json!({"image_id": id, "crop_overlap_ratio": 3.0}),
    ] {
        post_json(&s, "/v1/sam/auto", &body, &[]).error(400);
    }
    post_json(&s, "/v1/sam/auto", &json!({"image_id": "nope"}), &[]).error(404);
    call("GET", &s.url("/v1/jobs/nope"), &[], None).error(404);
    call("GET", &s.url("/v1/images/nope"), &[], None).error(404);
    call("POST", &s.url("/v1/semantic/predict"), &[], Some(&bytes)).error(404);
    call("POST", &s.url("/v1/instances/predict"), &[], Some(&bytes)).error(404);
    call("GET", &s.url("/v1/sam/predict"), &[], None).error(405);
    call("GET", &s.url("/v2/anything"), &[], None).error(404);

    // CORS for the allowed origin only.
    let o = [("Origin", "http://labeller.test")];
    let pre = call("OPTIONS", &s.url("/v1/sam/predict"), &o, None);
    assert_eq!(pre.status, 204);
    assert_eq!(pre.allow_origin.as_deref(), Some("http://labeller.test"));
    let other = call(
        "GET",
        &s.url("/healthz"),
        &[("Origin", "http://evil.test")],
        None,
    );
    assert!(other.allow_origin.is_none());

    // Still up, and the cache still answers as before.
    assert_eq!(call("GET", &s.url("/healthz"), &[], None).status, 200);
    let again = post_json(&s, "/v1/sam/predict", &click, &o);
    assert_eq!(again.allow_origin.as_deref(), Some("http://labeller.test"));
    let again = again.json()["masks"].clone();
    for i in 0..3 {
        assert_eq!(again[i]["segmentation"], baseline[i]["segmentation"]);
        assert_eq!(again[i]["score"], baseline[i]["score"]);
    }
}

#[test]
fn overload_answers_503_and_sigterm_finishes_requests_under_way() {
    let (ck, img) = sam_fixture();
    let s = Server::start(&["--sam", &ck, "--max-concurrency", "1", "--max-queue", "1"]);
    let bytes = std::fs::read(&img).unwrap();
    let id = call("POST", &s.url("/v1/images"), &[], Some(&bytes)).json()["image_id"]
        .as_str()
        .unwrap()
        .to_string();
    // A long automatic run holds the only heavy worker.
    let job = post_json(
        &s,
        "/v1/sam/auto",
        &json!({"image_id": id, "points_per_side": 96}),
        &[],
    )
    .json();
    let job_id = job["job_id"].as_str().unwrap().to_string();
    let t = Instant::now();
    while call("GET", &s.url(&format!("/v1/jobs/{job_id}")), &[], None).json()["state"] != "running"
    {
        assert!(t.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(10));
    }
    // One upload waits in the queue ...
    let tall = std::fs::read(fixtures().join("sam/tall.png")).unwrap();
    let url = s.url("/v1/images");
    let waiting = std::thread::spawn(move || call("POST", &url, &[], Some(&tall)));
    let t = Instant::now();
    loop {
        let m = String::from_utf8(call("GET", &s.url("/metrics"), &[], None).body).unwrap();
        if metric(&m, "segrs_queue_depth{lane=\"heavy\"}") == 1.0 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the upload never queued"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // ... the next finds the queue full; clicks still go through on their own lane.
    let dog = std::fs::read(fixtures().join("sam2/dog_small.png")).unwrap();
    let r = call("POST", &s.url("/v1/images"), &[], Some(&dog));
    r.error(503);
    assert_eq!(r.retry_after.as_deref(), Some("1"));
    let click = post_json(
        &s,
        "/v1/sam/predict",
        &json!({"image_id": id, "points": [[45, 29]]}),
        &[],
    );
    assert_eq!(click.status, 200);
    let state =
        call("GET", &s.url(&format!("/v1/jobs/{job_id}")), &[], None).json()["state"].clone();
    assert_eq!(
        state,
        json!("running"),
        "the test needs the job still running here"
    );
    // SIGTERM: the queued upload is still answered, then the server exits cleanly.
    unsafe { libc::kill(s.pid(), libc::SIGTERM) };
    let r = waiting.join().unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["width"], json!(40));
    assert_eq!(s.wait(Duration::from_secs(120)), 0);
}
