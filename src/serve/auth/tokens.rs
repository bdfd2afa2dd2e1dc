//! The admin token file (a mounted Secret): one token per line, `name:token` or just `token`.

use std::path::Path;

/// A token file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("read admin token file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("admin token file {path} holds no token (one per line, `name:token` or `token`)")]
    Empty { path: String },
    #[error("admin token file {path}, line {line}: a token needs at least 16 characters")]
    Short { path: String, line: usize },
}

/// Reads `path`: one token per line (`name:token` or just `token`); blank lines and lines
/// starting with `#` are skipped. Each token is `(name, token)`.
pub fn read(path: &Path) -> Result<Vec<(String, String)>, TokenFileError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|source| TokenFileError::Read { path: shown.clone(), source })?;
    let mut tokens = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, token) = match line.split_once(':') {
            Some((name, token)) => (name.trim().to_owned(), token.trim().to_owned()),
            None => (format!("token-{}", tokens.len() + 1), line.to_owned()),
        };
        if token.len() < 16 {
            return Err(TokenFileError::Short { path: shown, line: i + 1 });
        }
        tokens.push((name, token));
    }
    if tokens.is_empty() {
        return Err(TokenFileError::Empty { path: shown });
    }
    Ok(tokens)
}
