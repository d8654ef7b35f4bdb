//! `multipart/form-data` bodies as OpenAI's file endpoints take them
//! (`/v1/audio/transcriptions`): read whole into named fields.

use bytes::Bytes;

/// One field of a form.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub name: String,
    /// For a file: its name and type as the client gave them.
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub data: Bytes,
}

/// Most fields a form may have.
const MAX_FIELDS: usize = 64;

/// The fields of a form whose `Content-Type` header is `content_type`.
/// `Err`: why it is not a form (no boundary, broken parts, too many).
pub async fn read(content_type: &str, body: Bytes) -> Result<Vec<Field>, String> {
    let boundary = multer::parse_boundary(content_type)
        .map_err(|_| "the content type is not multipart/form-data with a boundary".to_owned())?;
    let once = futures::stream::once(async move { Ok::<Bytes, std::convert::Infallible>(body) });
    let mut form = multer::Multipart::new(once, boundary);
    let mut fields = Vec::new();
    while let Some(field) = form.next_field().await.map_err(|e| e.to_string())? {
        if fields.len() == MAX_FIELDS {
            return Err(format!("more than {MAX_FIELDS} fields"));
        }
        let name = field.name().unwrap_or_default().to_owned();
        let filename = field.file_name().map(str::to_owned);
        let content_type = field.content_type().map(|m| m.to_string());
        let data = field.bytes().await.map_err(|e| e.to_string())?;
        fields.push(Field {
            name,
            filename,
            content_type,
            data,
        });
    }
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_form_reads_as_its_fields_and_a_broken_one_says_so() {
        let body = "--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nauto\r\n\
            --b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\
            Content-Type: audio/wav\r\n\r\nRIFF\r\n--b--\r\n";
        let fields = read("multipart/form-data; boundary=b", Bytes::from(body))
            .await
            .expect("form");
        assert_eq!(fields[0].name, "model");
        assert_eq!(fields[0].data, "auto");
        assert_eq!(fields[1].filename.as_deref(), Some("a.wav"));
        assert_eq!(fields[1].content_type.as_deref(), Some("audio/wav"));
        assert_eq!(fields[1].data, "RIFF");
        assert!(read("application/json", Bytes::from(body)).await.is_err());
        assert!(
            read(
                "multipart/form-data; boundary=b",
                Bytes::from("--b\r\nbroken")
            )
            .await
            .is_err()
        );
    }
}
