//! `file://` sources: a local file, read in large chunks. The controller only allows files under
//! configured directories (so an OsImage cannot point it at its own service-account token).

use std::path::Path;

use futures::{StreamExt, TryStreamExt};
use tokio::io::AsyncSeekExt;

use super::{FetchConfig, FetchError, Opened};

pub(super) async fn open(config: &FetchConfig, path: &Path, offset: u64) -> Result<Opened, FetchError> {
    let shown = format!("file://{}", path.display());
    let real = tokio::fs::canonicalize(path)
        .await
        .map_err(|e| FetchError::Transfer { url: shown.clone(), message: e.to_string() })?;
    if let Some(roots) = &config.file_roots {
        let allowed = roots.iter().any(|r| std::fs::canonicalize(r).is_ok_and(|r| real.starts_with(r)));
        if !allowed {
            return Err(FetchError::Unsupported(if roots.is_empty() {
                format!("{shown}: file sources are disabled; allow a directory with --allow-file-source DIR")
            } else {
                format!("{shown}: not under an allowed directory ({})", join(roots))
            }));
        }
    }
    let mut file = tokio::fs::File::open(&real)
        .await
        .map_err(|e| FetchError::Transfer { url: shown.clone(), message: e.to_string() })?;
    let total = file.metadata().await.map(|m| m.len()).ok();
    if offset > 0 {
        file.seek(std::io::SeekFrom::Start(offset))
            .await
            .map_err(|e| FetchError::Transfer { url: shown.clone(), message: e.to_string() })?;
    }
    let chunks = tokio_util::io::ReaderStream::with_capacity(file, 1024 * 1024)
        .map_err(move |e| format!("{shown}: {e}"))
        .boxed();
    Ok(Opened { chunks, total, starts_at: offset, content_type: None })
}

fn join(roots: &[std::path::PathBuf]) -> String {
    roots.iter().map(|r| r.display().to_string()).collect::<Vec<_>>().join(", ")
}
