//! A small W3C WebDriver client driving Debian's headless Chromium through `chromedriver`:
//! JSON over HTTP (reqwest), only the commands the dashboard tests use.
//!
//! [`Browser::start`] runs `chromedriver` on a free loopback port in a process group of its
//! own (Chromium is its child), with a fresh profile and download directory; dropping the
//! [`Browser`] ends the session and kills the group, so that a failed test leaves no browser.
//! The binaries are `MAGNUM_TEST_CHROMEDRIVER` (default `/usr/bin/chromedriver`) and
//! `MAGNUM_TEST_CHROMIUM` (default `/usr/bin/chromium`); `scripts/test` installs Debian's
//! `chromium` and `chromium-driver`.
//!
//! Chromium is kept on loopback: background networking, component updates, sync and QUIC are
//! off, and every host name but `localhost` resolves to nothing.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

/// The key W3C WebDriver names element references with.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
/// How long one WebDriver command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(90);
/// How long chromedriver has to answer /status after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A WebDriver error: the protocol's error code and message.
#[derive(Debug, Clone)]
pub struct WebDriverError {
    pub error: String,
    pub message: String,
}

impl std::fmt::Display for WebDriverError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}: {}", self.error, self.message)
    }
}

/// A headless Chromium session.
pub struct Browser {
    client: reqwest::Client,
    /// `http://127.0.0.1:<port>/session/<id>`
    session_url: String,
    driver: Child,
    /// Where Chromium saves downloads.
    pub downloads: PathBuf,
    scratch: tempfile::TempDir,
}

/// An element of the current page.
#[derive(Debug, Clone)]
pub struct Element {
    id: String,
}

fn chromedriver_path() -> PathBuf {
    std::env::var_os("MAGNUM_TEST_CHROMEDRIVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromedriver"))
}

fn chromium_path() -> PathBuf {
    std::env::var_os("MAGNUM_TEST_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free loopback port")
}

impl Browser {
    /// Starts chromedriver and a Chromium session with a `width`×`height` window. Panics with
    /// what to install when the binaries are missing.
    pub async fn start(width: u32, height: u32) -> Browser {
        let chromedriver = chromedriver_path();
        let chromium = chromium_path();
        for binary in [&chromedriver, &chromium] {
            assert!(
                binary.exists(),
                "{} is missing: install Debian's chromium and chromium-driver (scripts/test does), \
                 or point MAGNUM_TEST_CHROMEDRIVER / MAGNUM_TEST_CHROMIUM at them",
                binary.display()
            );
        }
        let scratch = tempfile::tempdir().expect("a scratch directory");
        let downloads = scratch.path().join("downloads");
        let profile = scratch.path().join("profile");
        std::fs::create_dir_all(&downloads).unwrap();
        std::fs::create_dir_all(&profile).unwrap();
        let client = reqwest::Client::builder()
            .timeout(COMMAND_TIMEOUT)
            .no_proxy()
            .build()
            .expect("a reqwest client");
        // A port taken between the probe and chromedriver's bind is retried on another one.
        let mut attempts = 0;
        let (driver, base) = loop {
            attempts += 1;
            let port = free_port();
            let mut command = Command::new(&chromedriver);
            command
                .arg(format!("--port={port}"))
                .arg(format!(
                    "--log-path={}",
                    scratch.path().join("chromedriver.log").display()
                ))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            std::os::unix::process::CommandExt::process_group(&mut command, 0);
            let mut driver = command
                .spawn()
                .unwrap_or_else(|error| panic!("{} starts: {error}", chromedriver.display()));
            let base = format!("http://127.0.0.1:{port}");
            let deadline = Instant::now() + START_TIMEOUT;
            let mut ready = false;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = driver.try_wait() {
                    break;
                }
                if let Ok(response) = client.get(format!("{base}/status")).send().await {
                    let status: Value = response.json().await.unwrap_or(Value::Null);
                    if status["value"]["ready"] == true {
                        ready = true;
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if ready {
                break (driver, base);
            }
            kill_group(&mut driver);
            assert!(
                attempts < 3,
                "chromedriver did not get ready; its log: {}",
                std::fs::read_to_string(scratch.path().join("chromedriver.log"))
                    .unwrap_or_default()
            );
        };
        let arguments = vec![
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--no-default-browser-check".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-default-apps".to_owned(),
            "--disable-domain-reliability".to_owned(),
            "--disable-client-side-phishing-detection".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--no-proxy-server".to_owned(),
            "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1"
                .to_owned(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", profile.display()),
        ];
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "timeouts": {"implicit": 0, "pageLoad": 30_000, "script": 30_000},
            "goog:chromeOptions": {
                "binary": chromium.display().to_string(),
                "args": arguments,
                "prefs": {
                    "download.default_directory": downloads.display().to_string(),
                    "download.prompt_for_download": false,
                    "download.directory_upgrade": true,
                    "safebrowsing.enabled": false,
                },
            },
        }}});
        let response = client
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .await
            .expect("chromedriver answers");
        let body: Value = response.json().await.expect("a JSON answer");
        let Some(session) = body["value"]["sessionId"].as_str() else {
            let mut driver = driver;
            kill_group(&mut driver);
            panic!("Chromium does not start: {body}");
        };
        let browser = Browser {
            client,
            session_url: format!("{base}/session/{session}"),
            driver,
            downloads,
            scratch,
        };
        // Downloads go to the directory without asking (headless Chromium's default is to
        // refuse them).
        browser
            .command(
                "POST",
                "/goog/cdp/execute",
                Some(json!({"cmd": "Browser.setDownloadBehavior", "params": {
                    "behavior": "allow",
                    "downloadPath": browser.downloads.display().to_string(),
                }})),
            )
            .await
            .expect("downloads are allowed");
        browser
    }

    /// One WebDriver command on this session: its `value`, or the protocol's error.
    pub async fn command(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, WebDriverError> {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("an HTTP method");
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.session_url));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|error| WebDriverError {
            error: "no answer from chromedriver".to_owned(),
            message: error.to_string(),
        })?;
        let ok = response.status().is_success();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let value = body["value"].clone();
        if ok {
            Ok(value)
        } else {
            Err(WebDriverError {
                error: value["error"]
                    .as_str()
                    .unwrap_or("unknown error")
                    .to_owned(),
                message: value["message"].as_str().unwrap_or_default().to_owned(),
            })
        }
    }

    async fn must(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.command(method, path, body)
            .await
            .unwrap_or_else(|error| panic!("WebDriver {method} {path}: {error}"))
    }

    /// Opens `url` and waits for its load event.
    pub async fn goto(&self, url: &str) {
        self.must("POST", "/url", Some(json!({ "url": url }))).await;
    }

    pub async fn current_url(&self) -> String {
        self.must("GET", "/url", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub async fn refresh(&self) {
        self.must("POST", "/refresh", Some(json!({}))).await;
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page; its return value.
    pub async fn execute(&self, script: &str, args: Value) -> Value {
        self.must(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    /// Runs `script` whose last argument is a callback; what it passes to it.
    pub async fn execute_async(&self, script: &str, args: Value) -> Value {
        self.must(
            "POST",
            "/execute/async",
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    /// The first element matching the CSS selector, if any now.
    pub async fn try_find(&self, css: &str) -> Option<Element> {
        let found = self
            .command(
                "POST",
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await
            .ok()?;
        found[ELEMENT_KEY]
            .as_str()
            .map(|id| Element { id: id.to_owned() })
    }

    /// Waits up to `seconds` for an element matching `css`.
    pub async fn find(&self, css: &str, seconds: u64) -> Element {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        loop {
            if let Some(element) = self.try_find(css).await {
                return element;
            }
            assert!(
                Instant::now() < deadline,
                "no element {css} after {seconds}s on {}; the page says: {}",
                self.current_url().await,
                self.page_text().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits up to `seconds` until `script` (a function body) returns something truthy; that.
    pub async fn wait_until(&self, what: &str, script: &str, args: Value, seconds: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        loop {
            let value = self.execute(script, args.clone()).await;
            let truthy = match &value {
                Value::Null => false,
                Value::Bool(flag) => *flag,
                Value::String(text) => !text.is_empty(),
                Value::Number(number) => number.as_f64() != Some(0.0),
                _ => true,
            };
            if truthy {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not after {seconds}s on {}; the page says: {}",
                self.current_url().await,
                self.page_text().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the text of the element matching `css` is `expected`.
    pub async fn wait_for_text(&self, css: &str, expected: &str, seconds: u64) {
        self.wait_until(
            &format!("{css} reads {expected:?}"),
            "const element = document.querySelector(arguments[0]); \
             return element !== null && element.textContent.trim() === arguments[1];",
            json!([css, expected]),
            seconds,
        )
        .await;
    }

    /// The visible text of the page's main content (for failure messages).
    pub async fn page_text(&self) -> String {
        self.command(
            "POST",
            "/execute/sync",
            Some(json!({"script": "return (document.querySelector('main') || document.body).innerText;", "args": []})),
        )
        .await
        .ok()
        .and_then(|value| value.as_str().map(str::to_owned))
        .unwrap_or_default()
    }

    /// Runs `action` on the element matching `css`, finding it again when the page drew it
    /// anew in between (a live page redraws parts of itself as events arrive).
    async fn on_element(&self, css: &str, action: &[(&str, Value)]) {
        let mut attempts = 0;
        'again: loop {
            attempts += 1;
            let element = self.find(css, 10).await;
            for (path, body) in action {
                match self
                    .command("POST", &element.path(path), Some(body.clone()))
                    .await
                {
                    Ok(_) => {}
                    Err(error) if error.error.contains("stale element") && attempts < 10 => {
                        continue 'again;
                    }
                    Err(error) => panic!("WebDriver {path} on {css}: {error}"),
                }
            }
            return;
        }
    }

    /// Types into the element matching `css` (after clearing it).
    pub async fn fill(&self, css: &str, text: &str) {
        self.on_element(
            css,
            &[("/clear", json!({})), ("/value", json!({ "text": text }))],
        )
        .await;
    }

    /// Picks the option with `value` of the `<select>` matching `css`, as a click would.
    pub async fn choose(&self, css: &str, value: &str) {
        self.click(&format!("{css} option[value=\"{value}\"]"))
            .await;
    }

    /// Clicks the element matching `css`.
    pub async fn click(&self, css: &str) {
        self.on_element(css, &[("/click", json!({}))]).await;
    }

    /// The text of the element matching `css`.
    pub async fn text(&self, css: &str) -> String {
        self.find(css, 10).await.text(self).await
    }

    /// Saves a PNG screenshot of the viewport at `path`.
    pub async fn screenshot(&self, path: &Path) {
        let encoded = self.must("GET", "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().unwrap_or_default())
            .expect("a base64 PNG");
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }

    /// Saves a PNG of the whole page, beyond the viewport (Chromium's DevTools command).
    pub async fn screenshot_full_page(&self, path: &Path) {
        let shot = self
            .must(
                "POST",
                "/goog/cdp/execute",
                Some(json!({"cmd": "Page.captureScreenshot", "params": {
                    "format": "png", "captureBeyondViewport": true,
                }})),
            )
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap_or_default())
            .expect("a base64 PNG");
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }

    /// Resizes the window (CSS pixels).
    pub async fn resize(&self, width: u32, height: u32) {
        self.must(
            "POST",
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )
        .await;
    }

    /// Waits for a finished download named `name` in [`Browser::downloads`].
    pub async fn downloaded(&self, name: &str, seconds: u64) -> PathBuf {
        let path = self.downloads.join(name);
        let deadline = Instant::now() + Duration::from_secs(seconds);
        while !path.exists() {
            assert!(
                Instant::now() < deadline,
                "{name} was not downloaded in {seconds}s; the directory holds {:?}",
                std::fs::read_dir(&self.downloads)
                    .map(|entries| entries
                        .flatten()
                        .map(|entry| entry.file_name())
                        .collect::<Vec<_>>())
                    .unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        path
    }

    /// chromedriver's log, for failure messages.
    pub fn driver_log(&self) -> String {
        std::fs::read_to_string(self.scratch.path().join("chromedriver.log")).unwrap_or_default()
    }

    /// Ends the session (Chromium exits) and stops chromedriver.
    pub async fn quit(mut self) {
        let _ = self.command("DELETE", "", None).await;
        kill_group(&mut self.driver);
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        kill_group(&mut self.driver);
    }
}

/// Kills chromedriver's process group (Chromium and its helpers with it) and reaps it
/// (waiting at most 10 s: a drop must not hang a test). Chromium's crash handlers leave the
/// group but end with the browser.
fn kill_group(driver: &mut Child) {
    if let Ok(None) = driver.try_wait() {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", driver.id())])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Ok(None) = driver.try_wait() {
            if Instant::now() > deadline {
                let _ = driver.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Element {
    fn path(&self, rest: &str) -> String {
        format!("/element/{}{rest}", self.id)
    }

    pub async fn click(&self, browser: &Browser) {
        browser
            .must("POST", &self.path("/click"), Some(json!({})))
            .await;
    }

    pub async fn clear(&self, browser: &Browser) {
        browser
            .must("POST", &self.path("/clear"), Some(json!({})))
            .await;
    }

    /// Types `text` as key presses.
    pub async fn send_keys(&self, browser: &Browser, text: &str) {
        browser
            .must("POST", &self.path("/value"), Some(json!({ "text": text })))
            .await;
    }

    /// The rendered text.
    pub async fn text(&self, browser: &Browser) -> String {
        browser
            .must("GET", &self.path("/text"), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub async fn attribute(&self, browser: &Browser, name: &str) -> Option<String> {
        browser
            .must("GET", &self.path(&format!("/attribute/{name}")), None)
            .await
            .as_str()
            .map(str::to_owned)
    }

    /// The DOM property `name` (e.g. `value`, `checked`).
    pub async fn property(&self, browser: &Browser, name: &str) -> Value {
        browser
            .must("GET", &self.path(&format!("/property/{name}")), None)
            .await
    }
}
