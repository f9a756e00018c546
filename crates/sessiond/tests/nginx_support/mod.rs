//! A private nginx for the end-to-end tests of the shipped nginx recipes
//! (`docs/examples/*.conf`): started with the recipe as written, placeholders replaced.
//!
//! nginx comes from Debian's `nginx` package (`./scripts/test` installs it and sets
//! `REQUIRE_NGINX=1`, so CI never skips); without nginx and without that variable the tests
//! say they skip.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub fn find_nginx() -> Option<PathBuf> {
    let candidates = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    candidates
        .into_iter()
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into()])
        .map(|dir: PathBuf| dir.join("nginx"))
        .find(|p| p.is_file())
}

/// A private nginx in a temp dir, killed on drop.
pub struct Nginx {
    child: Child,
    pub addr: String,
    pub dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// Starts nginx with `snippet` (a shipped recipe) inside `http {}`, its placeholders
/// replaced.
pub async fn start_nginx(
    binary: &Path,
    snippet: &str,
    sessiond: &str,
    app: &str,
    api_key: &str,
) -> Nginx {
    for _ in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let addr = free_addr();
        let d = dir.path().display();
        let site = snippet
            .replace("SESSIOND_ADDR", sessiond)
            .replace("APP_ADDR", app)
            .replace("LISTEN_ADDR", &addr)
            .replace("SESSIOND_API_KEY", api_key);
        let conf = format!(
            "worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             events {{ worker_connections 128; }}\n\
             http {{\n access_log off;\n client_body_temp_path {d}/body;\n proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n\
             {site}\n}}\n"
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let mut child = Command::new(binary)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .args(["-g", "daemon off; master_process off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn nginx");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if tokio::net::TcpStream::connect(&addr).await.is_ok() {
                return Nginx { child, addr, dir };
            }
            if let Ok(Some(_)) = child.try_wait() {
                let log = std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
                eprintln!("nginx exited (port taken?), retrying: {log}");
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "nginx did not listen on {addr}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    panic!("nginx did not start after 5 attempts");
}

/// nginx, or `None` (the test then skips) when it is not installed and not required.
pub fn nginx_or_skip() -> Option<PathBuf> {
    let found = find_nginx();
    if found.is_none() {
        if std::env::var_os("REQUIRE_NGINX").is_some() {
            panic!("nginx is required (REQUIRE_NGINX is set) but not installed");
        }
        eprintln!("SKIPPED: nginx not installed (./scripts/test installs it)");
    }
    found
}

/// Binds `addr` again once its previous owner has let go of it.
pub async fn rebind(addr: SocketAddr) -> tokio::net::TcpListener {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => return listener,
            Err(e) => assert!(
                tokio::time::Instant::now() < deadline,
                "cannot bind {addr} again: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
