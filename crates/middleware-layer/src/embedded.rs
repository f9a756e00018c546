//! The in-process setup: sessiond's decider and the object runtime it needs, on store handles
//! the app opened (the embedded SQLite engine, memory, or a shared Redis).
//!
//! The decider keeps one runtime object per client (per-client serialization, the TTL alarm),
//! so it needs a running runtime; [`Embedded`] owns both and stops them together. The app owns
//! the engine: it opens it before and closes it after (`EngineAdmin::close`), as sessiond does.
//!
//! Analytics: `analytics.sink = "file"` appends to `analytics.file` (relative to the working
//! directory); the `stream` sink needs sessiond's streams capability, which an app does not
//! run, so it is treated as `off` with a warning.

use std::sync::Arc;

use sessiond_http::ConfigError;
use sessiond_middleware::{
    AnalyticsSink, AnalyticsTarget, Decider, FileSink, MiddlewareConfig, NoSink,
};
use sessiond_runtime::{Runtime, RuntimeConfig};
use sessiond_store::Stores;

use crate::service::SessionLayer;

/// A decider and its running object runtime.
pub struct Embedded {
    decider: Decider,
    runtime: Runtime,
}

impl Embedded {
    /// Starts the runtime and the decider over `stores` (call inside a tokio runtime).
    /// Client states stay cached in memory between requests when the engine is exclusive to
    /// this process (`EngineAdmin::exclusive`).
    pub fn start(config: MiddlewareConfig, stores: &Stores) -> Result<Self, ConfigError> {
        let sink: Arc<dyn AnalyticsSink> = match config.analytics.sink {
            AnalyticsTarget::Off => Arc::new(NoSink),
            AnalyticsTarget::File => {
                let file = &config.analytics.file;
                Arc::new(FileSink::open(file, config.analytics.buffer).map_err(|e| {
                    ConfigError::new(format!("cannot open middleware.analytics.file {file}: {e}"))
                })?)
            }
            AnalyticsTarget::Stream => {
                tracing::warn!(
                    "middleware.analytics.sink = \"stream\" needs a sessiond server; in-process \
                     analytics are off (set it to \"file\" or \"off\")"
                );
                Arc::new(NoSink)
            }
        };
        let mut builder = Runtime::builder(stores.objects.clone(), RuntimeConfig::default());
        let decider = Decider::new(
            config,
            &mut builder,
            stores.objects.clone(),
            stores.admin.exclusive(),
            sink,
        )?;
        Ok(Embedded {
            decider,
            runtime: builder.start(),
        })
    }

    /// The decider (cheap to clone).
    pub fn decider(&self) -> Decider {
        self.decider.clone()
    }

    /// A [`SessionLayer`] deciding with this decider.
    pub fn layer(&self) -> SessionLayer {
        SessionLayer::in_process(self.decider())
    }

    /// Stops the runtime's loops and waits for running alarm handlers. Close the engine after.
    pub async fn shutdown(self) {
        self.runtime.shutdown().await;
    }
}

impl std::fmt::Debug for Embedded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedded")
            .field("decider", &self.decider)
            .finish_non_exhaustive()
    }
}
