//! `s3` sources: an object in a bucket, read with aws-sdk-s3 (ranged GET when resuming).

use futures::StreamExt;

use super::{FetchError, Opened};
use crate::store::s3::{S3Settings, client};

pub(super) async fn open(settings: &S3Settings, key: &str, offset: u64) -> Result<Opened, FetchError> {
    let shown = format!("s3://{}/{key}", settings.bucket);
    let client = client(settings).await?;
    let mut req = client.get_object().bucket(&settings.bucket).key(key);
    if offset > 0 {
        req = req.range(format!("bytes={offset}-"));
    }
    let out = req.send().await.map_err(|e| match e.raw_response().map(|r| r.status().as_u16()) {
        Some(status) => FetchError::Status { url: shown.clone(), status },
        None => FetchError::Transfer {
            url: shown.clone(),
            message: aws_sdk_s3::error::DisplayErrorContext(&e).to_string(),
        },
    })?;
    let remaining = out.content_length().and_then(|n| u64::try_from(n).ok());
    let total = remaining.map(|n| n + offset);
    let body = out.body;
    // After an error the stream ends (the fetcher resumes with a new ranged GET).
    let chunks = futures::stream::unfold(Some((body, shown)), |state| async move {
        let (mut body, shown) = state?;
        match body.try_next().await {
            Ok(Some(chunk)) => Some((Ok(chunk), Some((body, shown)))),
            Ok(None) => None,
            Err(e) => Some((Err(format!("{shown}: {e}")), None)),
        }
    })
    .boxed();
    Ok(Opened { chunks, total, starts_at: offset, content_type: out.content_type })
}
