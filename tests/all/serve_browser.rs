//! The click-to-segment page in real headless Chromium (through ChromeDriver's WebDriver API):
//! open the page, upload a photo from the shared data, click a point, wait for the overlay, and
//! check that the mask drawn on the page is the API's mask for that click. A screenshot of the
//! page is saved under `target/tmp/serve-browser/`.
//!
//! Chromium and ChromeDriver (Debian's `chromium` and `chromium-driver`) are found on the PATH or
//! through $SEGRS_CHROMIUM / $SEGRS_CHROMEDRIVER; without them the test is skipped with a
//! message, unless SEGRS_REQUIRE_BROWSER=1 (as `.ci/run` sets): then it fails.

use crate::common::{fixtures, shared_data};
use crate::serve::{Server, call, mask_of};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn find(env: &str, names: &[&str]) -> Option<PathBuf> {
    if let Ok(p) = std::env::var(env) {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var("PATH").unwrap_or_default();
    names.iter().find_map(|n| {
        std::env::split_paths(&path)
            .map(|d| d.join(n))
            .find(|p| p.is_file())
    })
}

struct Driver {
    child: Child,
    base: String,
    session: String,
}

impl Driver {
    fn start(driver: &PathBuf, chromium: &PathBuf) -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let t = Instant::now();
        loop {
            let ready = ureq::get(&format!("{base}/status"))
                .call()
                .ok()
                .and_then(|r| r.into_json::<Value>().ok())
                .is_some_and(|v| v["value"]["ready"] == json!(true));
            if ready {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "chromedriver did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut d = Driver {
            child,
            base,
            session: String::new(),
        };
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1400,1000"],
            },
        }}});
        let v = d.send("POST", "/session", Some(caps));
        d.session = v["sessionId"]
            .as_str()
            .expect("a WebDriver session")
            .to_string();
        d
    }

    /// A WebDriver command; its `value`.
    fn send(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = if path == "/session" {
            format!("{}{path}", self.base)
        } else {
            format!("{}/session/{}{path}", self.base, self.session)
        };
        let r = ureq::request(method, &url).timeout(Duration::from_secs(120));
        let res = match body {
            Some(b) => r.send_json(b),
            None => r.call(),
        };
        let v: Value = match res {
            Ok(r) => r.into_json().unwrap(),
            Err(ureq::Error::Status(code, r)) => {
                panic!(
                    "WebDriver {method} {path}: {code} {}",
                    r.into_string().unwrap()
                )
            }
            Err(e) => panic!("WebDriver {method} {path}: {e}"),
        };
        v["value"].clone()
    }

    fn script(&self, js: &str) -> Value {
        self.send(
            "POST",
            "/execute/sync",
            Some(json!({"script": js, "args": []})),
        )
    }

    fn element(&self, css: &str) -> String {
        let v = self.send(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        v[ELEMENT].as_str().unwrap().to_string()
    }

    fn wait_for(&self, js: &str, what: &str) -> Value {
        let t = Instant::now();
        loop {
            let v = self.script(js);
            if !v.is_null() && v != json!(false) {
                return v;
            }
            let status = self.script("return document.getElementById('status').textContent");
            assert!(
                t.elapsed() < Duration::from_secs(120),
                "waited for {what}; the page says {status}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = ureq::delete(&format!("{}/session/{}", self.base, self.session)).call();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn page_click_draws_the_api_mask_in_chromium() {
    let required = std::env::var("SEGRS_REQUIRE_BROWSER").is_ok_and(|v| v == "1");
    let (Some(driver), Some(chromium)) = (
        find("SEGRS_CHROMEDRIVER", &["chromedriver"]),
        find(
            "SEGRS_CHROMIUM",
            &["chromium", "chromium-browser", "google-chrome"],
        ),
    ) else {
        assert!(
            !required,
            "SEGRS_REQUIRE_BROWSER=1 but chromium / chromedriver are not on the PATH"
        );
        eprintln!(
            "SKIP: the page test needs chromium and chromedriver (Debian: apt install chromium chromium-driver)"
        );
        return;
    };
    let Some(photos) = shared_data("sam_demo_images") else {
        return;
    };
    let photo = photos.join("truck.jpg").canonicalize().unwrap();
    let ck = fixtures().join("sam/tiny_sam.pth");
    let s = Server::start(&["--sam", ck.to_str().unwrap()]);
    let d = Driver::start(&driver, &chromium);
    d.send("POST", "/url", Some(json!({"url": s.url("/")})));
    let input = d.element("#file");
    d.send(
        "POST",
        &format!("/element/{input}/value"),
        Some(json!({"text": photo.to_str().unwrap()})),
    );
    d.wait_for("return window.segrs.imageId", "the upload");
    let (w, h) = (
        d.script("return window.segrs.width").as_u64().unwrap() as usize,
        d.script("return window.segrs.height").as_u64().unwrap() as usize,
    );
    assert_eq!((w, h), (1800, 1200));

    // A click left of and above the centre of the image, as a user would make it.
    let marks = d.element("#marks");
    let click = json!({"actions": [{"type": "pointer", "id": "mouse",
    "parameters": {"pointerType": "mouse"},
    "actions": [
        {"type": "pointerMove", "origin": {ELEMENT: marks}, "x": -60, "y": -30},
        {"type": "pointerDown", "button": 0},
        {"type": "pointerUp", "button": 0},
    ]}]});
    d.send("POST", "/actions", Some(click));
    d.wait_for("return window.segrs.drawnSeq >= 1", "the mask overlay");

    // What the page drew: mask-layer pixels with alpha, as row-major runs [start, length, ...].
    let runs = d.script(
        "const c = document.getElementById('mask');
         const a = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
         const runs = []; let start = -1;
         for (let i = 0; i <= a.length / 4; i++) {
           const on = i < a.length / 4 && a[4 * i + 3] > 0;
           if (on && start < 0) start = i;
           if (!on && start >= 0) { runs.push(start, i - start); start = -1; }
         }
         return runs;",
    );
    let mut drawn = vec![0u8; w * h];
    for r in runs.as_array().unwrap().chunks(2) {
        let (a, n) = (
            r[0].as_u64().unwrap() as usize,
            r[1].as_u64().unwrap() as usize,
        );
        drawn[a..a + n].fill(1);
    }
    let request = d.script("return window.segrs.lastRequest");
    let selected = d.script("return window.segrs.selected").as_u64().unwrap() as usize;
    let p = &request["points"][0];
    let (px, py) = (p[0].as_f64().unwrap(), p[1].as_f64().unwrap());
    assert!(
        (px - (900.0
            - 60.0 * 1800.0
                / d.script(
                    "return document.getElementById('marks').getBoundingClientRect().width"
                )
                .as_f64()
                .unwrap()))
        .abs()
            < 3.0
            && py < 600.0,
        "the click lands where it was made: {request}"
    );
    // The same prompt through the API gives the drawn mask.
    let api = call(
        "POST",
        &s.url("/v1/sam/predict"),
        &[("Content-Type", "application/json")],
        Some(request.to_string().as_bytes()),
    )
    .json();
    let (mask, mh, mw) = mask_of(&api["masks"][selected]);
    assert_eq!((mh, mw), (h, w));
    assert!(mask.contains(&1), "the click gives a non-empty mask");
    assert_eq!(drawn, mask, "the page draws the API's mask");

    let shot = d.send("GET", "/screenshot", None);
    use base64::Engine;
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot.as_str().unwrap())
        .unwrap();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("serve-browser");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("page.png");
    std::fs::write(&out, &png).unwrap();
    let pic = segrs::data::image_io::read_image(&out).unwrap();
    assert!(pic.width >= 800 && pic.height >= 600);
    eprintln!("screenshot: {}", out.display());
}
