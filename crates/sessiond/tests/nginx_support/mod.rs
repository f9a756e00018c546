//! A private nginx for the end-to-end tests of the shipped nginx recipes
//! (`docs/examples/*.conf`): started with the recipe as written, placeholders replaced. The
//! process handling is the proxies' shared one (`proxy_support`, which a test including this
//! module includes too).
//!
//! nginx comes from Debian's `nginx` package (`./scripts/test` installs it and sets
//! `REQUIRE_NGINX=1`, so CI never skips); without nginx and without that variable the tests
//! say they skip.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::proxy_support::{binary_or_skip, start_proxy, Proxy};

/// A private nginx in a temp dir (its `error.log` is [`Proxy::log`]), killed on drop.
pub type Nginx = Proxy;

/// Starts nginx with `snippet` (a shipped recipe) inside `http {}`, its placeholders
/// replaced.
pub async fn start_nginx(
    binary: &Path,
    snippet: &str,
    sessiond: &str,
    app: &str,
    api_key: &str,
) -> Nginx {
    start_proxy("nginx", "error.log", Duration::from_secs(10), |dir, addr| {
        let d = dir.display();
        let site = snippet
            .replace("SESSIOND_ADDR", sessiond)
            .replace("APP_ADDR", app)
            .replace("LISTEN_ADDR", addr)
            .replace("SESSIOND_API_KEY", api_key);
        let conf = format!(
            "worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             events {{ worker_connections 128; }}\n\
             http {{\n access_log off;\n client_body_temp_path {d}/body;\n proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n\
             {site}\n}}\n"
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let mut command = Command::new(binary);
        command
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(dir.join("error.log"))
            .args(["-g", "daemon off; master_process off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command
    })
    .await
}

/// nginx, or `None` (the test then skips) when it is not installed and not required.
pub fn nginx_or_skip() -> Option<PathBuf> {
    binary_or_skip("nginx", &["/usr/sbin", "/usr/local/sbin"], "REQUIRE_NGINX")
}
