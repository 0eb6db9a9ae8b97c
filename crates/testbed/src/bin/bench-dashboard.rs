//! `bench-dashboard`: loads the dashboard in headless Chromium, once with an empty cache and
//! then RUNS (20) times with a warm one, and prints Chromium's navigation timing of each
//! (responseEnd, DOMContentLoaded, load) and when the first page showed its data (the app's
//! `magnum:first-page` mark), with what each load fetched over the network.
//!
//! Environment: DASHBOARD_URL (`http://host:port/dashboard/`), RUNS (20). Used by
//! `scripts/bench-dashboard`. Figures only: nothing is asserted.

use std::time::Duration;

use magnum_test_support::webdriver::Browser;
use serde_json::{json, Value};

fn setting(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index]
}

/// One load's figures, read once the first page has its data.
const MEASURE: &str = "
const done = arguments[arguments.length - 1];
const started = Date.now();
(function look() {
  const mark = performance.getEntriesByName('magnum:first-page')[0];
  if (!mark && Date.now() - started < 20000) { setTimeout(look, 10); return; }
  const navigation = performance.getEntriesByType('navigation')[0];
  const resources = performance.getEntriesByType('resource').map((entry) => ({
    name: entry.name, transfer: entry.transferSize, encoded: entry.encodedBodySize,
    decoded: entry.decodedBodySize, duration: entry.duration,
  }));
  done({
    response_end: navigation.responseEnd,
    dom_content_loaded: navigation.domContentLoadedEventEnd,
    load: navigation.loadEventEnd,
    first_page: mark ? mark.startTime : null,
    document_transfer: navigation.transferSize,
    resources,
  });
})();
";

/// A cold load: the first navigation of a fresh profile.
async fn first_load(browser: &Browser, url: &str) -> Value {
    browser.goto(url).await;
    measure(browser).await
}

/// A warm load: the page navigates to itself again (a full navigation, the cache kept).
/// Started from the page, not with WebDriver's navigation command, which times out leaving
/// a page with an open event stream.
async fn warm_load(browser: &Browser, url: &str) -> Value {
    browser
        .execute(
            "window.__benchGone = true; setTimeout(() => { location.href = arguments[0]; }, 0);",
            json!([url]),
        )
        .await;
    browser
        .wait_until(
            "the page loaded again",
            "return window.__benchGone === undefined && document.readyState === 'complete';",
            json!([]),
            30,
        )
        .await;
    measure(browser).await
}

async fn measure(browser: &Browser) -> Value {
    // loadEventEnd is set just after the load event's handlers: give it a moment.
    tokio::time::sleep(Duration::from_millis(20)).await;
    browser.execute_async(MEASURE, json!([])).await
}

fn show_resources(figures: &Value) {
    for resource in figures["resources"].as_array().into_iter().flatten() {
        let name = resource["name"].as_str().unwrap_or_default();
        let short = name.rsplit('/').next().unwrap_or(name);
        println!(
            "  {:<40} {:>7} B over the network, {:>7} B encoded, {:>7} B decoded, {:>6.1} ms",
            short.split('?').next().unwrap_or(short),
            resource["transfer"],
            resource["encoded"],
            resource["decoded"],
            resource["duration"].as_f64().unwrap_or(f64::NAN)
        );
    }
}

#[tokio::main]
async fn main() {
    let url = setting("DASHBOARD_URL", "http://127.0.0.1:9511/dashboard/");
    let runs: usize = setting("RUNS", "20").parse().expect("RUNS");
    let browser = Browser::start(1280, 900).await;
    let cold = first_load(&browser, &url).await;
    println!(
        "cold cache: responseEnd {:.1} ms, DOMContentLoaded {:.1} ms, load {:.1} ms, first page with data {:.1} ms; document {} B over the network",
        cold["response_end"].as_f64().unwrap_or(f64::NAN),
        cold["dom_content_loaded"].as_f64().unwrap_or(f64::NAN),
        cold["load"].as_f64().unwrap_or(f64::NAN),
        cold["first_page"].as_f64().unwrap_or(f64::NAN),
        cold["document_transfer"]
    );
    show_resources(&cold);
    let mut series: [Vec<f64>; 4] = Default::default();
    let mut last = Value::Null;
    for _ in 0..runs {
        let figures = warm_load(&browser, &url).await;
        for (index, key) in ["response_end", "dom_content_loaded", "load", "first_page"]
            .iter()
            .enumerate()
        {
            series[index].push(figures[key].as_f64().unwrap_or(f64::NAN));
        }
        last = figures;
    }
    println!("warm cache, {runs} loads (ms)       p50     p90     max");
    for (index, name) in [
        "responseEnd",
        "DOMContentLoaded",
        "loadEventEnd",
        "first page with data",
    ]
    .iter()
    .enumerate()
    {
        let mut values = series[index].clone();
        values.sort_by(f64::total_cmp);
        println!(
            "  {:<28} {:>7.1} {:>7.1} {:>7.1}",
            name,
            percentile(&values, 0.5),
            percentile(&values, 0.9),
            values.last().copied().unwrap_or(f64::NAN)
        );
    }
    println!("last warm load's requests (0 B over the network: from the cache):");
    show_resources(&last);
    browser.quit().await;
}
