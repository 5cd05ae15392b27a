//! Progress bars for `pull`/`push` on a terminal (indicatif); plain lines otherwise.

use std::io::IsTerminal;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use podlet_runtime::image::registry::{BlobProgress, PlainProgress, Progress};
use podlet_runtime::image::Digest;

/// One bar per blob under a shared multi-bar.
pub struct Bars(MultiProgress);

struct Bar(ProgressBar);

impl BlobProgress for Bar {
    fn advance(&self, n: u64) {
        self.0.inc(n);
    }
    fn done(&self) {
        self.0.finish_with_message("done");
    }
}

impl Progress for Bars {
    fn skipped(&self, digest: &Digest, _size: u64) {
        let _ = self
            .0
            .println(format!("Blob {} already present", digest.short()));
    }
    fn started(&self, digest: &Digest, size: u64) -> Box<dyn BlobProgress> {
        let bar = self.0.add(ProgressBar::new(size));
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {bytes}/{total_bytes} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix(format!("Copying blob {}", digest.short()));
        Box::new(Bar(bar))
    }
}

/// Bars when stderr is a terminal, plain lines otherwise.
pub fn for_stderr() -> Box<dyn Progress> {
    if std::io::stderr().is_terminal() {
        Box::new(Bars(MultiProgress::new()))
    } else {
        Box::new(PlainProgress)
    }
}
