//! A small `multipart/form-data` parser (RFC 7578) for the avatar upload: the page's FormData
//! and `puppetcam ctl avatar create` send the images this way. Pure and bounded: it only slices
//! the body it is given (whose size the server has already limited), never allocates per byte
//! and refuses malformed input with a message instead of guessing.

/// One part: a form field (`filename: None`) or a file.
#[derive(Clone, Debug, PartialEq)]
pub struct Part<'a> {
    pub name: String,
    pub filename: Option<String>,
    pub data: &'a [u8],
}

/// Most parts accepted (32 images and a few fields).
pub const MAX_PARTS: usize = 40;

/// The boundary of a `multipart/form-data; boundary=...` content type.
pub fn boundary(content_type: &str) -> Result<String, String> {
    let mut it = content_type.split(';');
    let kind = it.next().unwrap_or("").trim();
    if !kind.eq_ignore_ascii_case("multipart/form-data") {
        return Err(format!("expected multipart/form-data, got {kind:?}"));
    }
    for p in it {
        if let Some((k, v)) = p.split_once('=') {
            if k.trim().eq_ignore_ascii_case("boundary") {
                let b = v.trim().trim_matches('"');
                if b.is_empty() || b.len() > 70 {
                    return Err("multipart boundary must be 1..=70 characters".into());
                }
                return Ok(b.to_string());
            }
        }
    }
    Err("multipart/form-data without a boundary".into())
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || from > hay.len() {
        return None;
    }
    hay[from..].windows(needle.len()).position(|w| w == needle).map(|i| i + from)
}

/// A `Content-Disposition: form-data; name="x"; filename="y"` parameter.
fn param(disposition: &str, key: &str) -> Option<String> {
    disposition.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim().eq_ignore_ascii_case(key).then(|| v.trim().trim_matches('"').to_string())
    })
}

/// Splits `body` into its parts.
pub fn parse<'a>(body: &'a [u8], boundary: &str) -> Result<Vec<Part<'a>>, String> {
    let delim = format!("--{boundary}");
    let mut pos = find(body, delim.as_bytes(), 0).ok_or("multipart body without its first boundary")?;
    let mut parts = Vec::new();
    loop {
        pos += delim.len();
        if body[pos..].starts_with(b"--") {
            return Ok(parts); // the closing boundary
        }
        if !body[pos..].starts_with(b"\r\n") {
            return Err("multipart boundary not followed by CRLF".into());
        }
        pos += 2;
        let head_end = find(body, b"\r\n\r\n", pos).ok_or("multipart part without the end of its headers")?;
        let head = std::str::from_utf8(&body[pos..head_end]).map_err(|_| "multipart part headers are not UTF-8")?;
        let disposition = head
            .split("\r\n")
            .find_map(|l| l.split_once(':').filter(|(k, _)| k.trim().eq_ignore_ascii_case("content-disposition")).map(|(_, v)| v.trim()))
            .ok_or("multipart part without Content-Disposition")?;
        let name = param(disposition, "name").ok_or("multipart part without a name")?;
        let filename = param(disposition, "filename");
        let data_start = head_end + 4;
        let next = find(body, format!("\r\n{delim}").as_bytes(), data_start).ok_or("multipart part without a closing boundary")?;
        parts.push(Part { name, filename, data: &body[data_start..next] });
        if parts.len() > MAX_PARTS {
            return Err(format!("more than {MAX_PARTS} multipart parts"));
        }
        pos = next + 2;
    }
}

/// Builds a body (`ctl`, tests): fields then files; returns (content type, body).
pub fn build(fields: &[(&str, &str)], files: &[(&str, &str, &[u8])]) -> (String, Vec<u8>) {
    let boundary = format!("puppetcam{:016x}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64));
    let mut b = Vec::new();
    for (k, v) in fields {
        b.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n").as_bytes());
    }
    for (k, fname, data) in files {
        let fname = fname.replace(['"', '\r', '\n'], "_");
        b.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"; filename=\"{fname}\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes(),
        );
        b.extend_from_slice(data);
        b.extend_from_slice(b"\r\n");
    }
    b.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_browser_form() {
        let img = b"\x89PNG\r\n--not a boundary\r\n\r\nbytes";
        let (ct, body) = build(&[("name", "Ada"), ("steps", "20")], &[("image", "a.png", img), ("image", "b\".jpg", b"jpg")]);
        let parts = parse(&body, &boundary(&ct).unwrap()).unwrap();
        assert_eq!(parts.len(), 4);
        assert_eq!((parts[0].name.as_str(), parts[0].data), ("name", &b"Ada"[..]));
        assert_eq!(parts[2].filename.as_deref(), Some("a.png"));
        assert_eq!(parts[2].data, img);
        assert_eq!(parts[3].filename.as_deref(), Some("b_.jpg"));
        // What Chromium sends for a FormData.
        let browser = b"------WebKitFormBoundaryX\r\nContent-Disposition: form-data; name=\"image\"; filename=\"p.jpg\"\r\nContent-Type: image/jpeg\r\n\r\nJJ\r\n------WebKitFormBoundaryX--\r\n";
        let p = parse(browser, &boundary("multipart/form-data; boundary=----WebKitFormBoundaryX").unwrap()).unwrap();
        assert_eq!((p.len(), p[0].data), (1, &b"JJ"[..]));
    }

    #[test]
    fn malformed_bodies_are_refused() {
        assert!(boundary("application/json").is_err());
        assert!(boundary("multipart/form-data").is_err());
        assert!(parse(b"no boundary here", "b").is_err());
        assert!(parse(b"--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\nunterminated", "b").is_err());
        assert!(parse(b"--b\r\nX: y\r\n\r\nv\r\n--b--", "b").is_err());
        assert!(parse(b"--bjunk", "b").is_err());
        let many: String = (0..50).map(|i| format!("--b\r\nContent-Disposition: form-data; name=\"f{i}\"\r\n\r\nv\r\n")).collect::<String>() + "--b--";
        assert!(parse(many.as_bytes(), "b").unwrap_err().contains("parts"));
    }
}
