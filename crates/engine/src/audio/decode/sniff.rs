//! Naming the audio in a file the built-in decoders cannot read, so the
//! error can say what it is and that ffmpeg adds it. Only formats known to
//! be audio are named; anything else keeps the built-in decoder's error (a
//! text file is "not a recognised audio file", not "install ffmpeg").

use std::io::Read;
use std::path::Path;

use super::DecodeError;

/// Magic bytes at the start of a file and the format they announce
/// (the formats' specifications: ATSC A/52 sync word, ASF header object
/// GUID, DTS core sync word, RFC 4867 AMR magic, Monkey's Audio, WavPack,
/// Musepack SV7/SV8, TTA, Sun/NeXT AU; EBU Tech 3306 RF64 and ITU-R
/// BS.2088 BW64, the WAV forms over 4 GiB that recorders and DAWs write;
/// Sony Wave64's `riff` GUID).
const MAGIC: &[(&[u8], &str)] = &[
    (b"RF64", "RF64 WAV audio (the WAV form over 4 GB)"),
    (b"BW64", "BW64 WAV audio (the WAV form over 4 GB)"),
    (
        &[0x72, 0x69, 0x66, 0x66, 0x2E, 0x91, 0xCF, 0x11, 0xA5, 0xD6, 0x28, 0xDB, 0x04, 0xC1, 0x00, 0x00],
        "Sony Wave64 audio",
    ),
    (&[0x0B, 0x77], "AC-3 / E-AC-3 (Dolby Digital) audio"),
    (
        &[0x30, 0x26, 0xB2, 0x75, 0x8E, 0x66, 0xCF, 0x11, 0xA6, 0xD9, 0x00, 0xAA, 0x00, 0x62, 0xCE, 0x6C],
        "WMA / ASF (Windows Media) audio",
    ),
    (&[0x7F, 0xFE, 0x80, 0x01], "DTS audio"),
    (b"#!AMR", "AMR speech audio"),
    (b"MAC ", "Monkey's Audio (APE)"),
    (b"wvpk", "WavPack audio"),
    (b"MPCK", "Musepack audio"),
    (b"MP+", "Musepack audio"),
    (b"TTA1", "TTA audio"),
    (b".snd", "Sun AU audio"),
];

/// Extensions of audio formats only ffmpeg reads here, for files whose
/// first bytes say nothing (lower case).
const EXTENSIONS: &[(&str, &str)] = &[
    ("ac3", "AC-3 (Dolby Digital) audio"),
    ("eac3", "E-AC-3 (Dolby Digital Plus) audio"),
    ("ec3", "E-AC-3 (Dolby Digital Plus) audio"),
    ("wma", "WMA (Windows Media) audio"),
    ("asf", "WMA / ASF (Windows Media) audio"),
    ("dts", "DTS audio"),
    ("amr", "AMR speech audio"),
    ("ape", "Monkey's Audio (APE)"),
    ("wv", "WavPack audio"),
    ("mpc", "Musepack audio"),
    ("tta", "TTA audio"),
    ("au", "Sun AU audio"),
    ("ra", "RealAudio"),
    ("rm", "RealAudio"),
];

/// The first bytes of `path` (up to 64).
fn head(path: &Path) -> Vec<u8> {
    let mut buf = Vec::new();
    if let Ok(f) = std::fs::File::open(path) {
        let _ = f.take(64).read_to_end(&mut buf);
    }
    buf
}

/// Whether `path` is a text list of other media that ffmpeg would open in
/// its place: an HLS playlist (`#EXTM3U`, RFC 8216 §4.3.1.1) or an ffmpeg
/// concat script (`ffconcat version 1.0`). Both are probed by their first
/// line, whatever the file's name, and their entries may name any local
/// file (or, for HLS, an address ffmpeg fetches), so a file sent to the
/// HTTP service could make the server read another song on its disk. A
/// UTF-8 byte order mark and leading blank space are skipped.
pub(super) fn is_media_list(path: &Path) -> bool {
    let head = head_after_id3(path);
    let text = head.strip_prefix(b"\xEF\xBB\xBF".as_slice()).unwrap_or(&head);
    let start = text.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(text.len());
    let text = &text[start..];
    text.starts_with(b"#EXTM3U") || text.starts_with(b"ffconcat")
}

/// The first 64 bytes of `path` after an ID3v2 tag, which ffmpeg skips
/// before it guesses a format (ID3v2.4 §3.1: "ID3", version, flags, then
/// the tag's size as four 7-bit bytes, plus a 10-byte footer when flag
/// bit 4 is set).
fn head_after_id3(path: &Path) -> Vec<u8> {
    use std::io::{Seek, SeekFrom};
    let first = head(path);
    if first.len() < 10 || &first[..3] != b"ID3" {
        return first;
    }
    let size = first[6..10].iter().fold(0u64, |n, b| (n << 7) | u64::from(b & 0x7F));
    let footer = if first[5] & 0x10 != 0 { 10 } else { 0 };
    let mut buf = Vec::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        if f.seek(SeekFrom::Start(10 + size + footer)).is_ok() {
            let _ = f.take(64).read_to_end(&mut buf);
        }
    }
    buf
}

/// The container `head` (a file's first bytes) starts like, by its magic.
fn container_of(head: &[u8]) -> Option<&'static str> {
    if head.get(4..8) == Some(b"ftyp") {
        Some("MP4/M4A")
    } else if head.starts_with(&[0x1A, 0x45, 0xDF, 0xA3]) {
        Some("Matroska/WebM")
    } else if head.starts_with(b"OggS") {
        Some("Ogg")
    } else if head.starts_with(b"RIFF") && head.get(8..12) == Some(b"WAVE") {
        Some("WAV")
    } else if head.starts_with(b"FORM") {
        Some("AIFF")
    } else if head.starts_with(b"fLaC") {
        Some("FLAC")
    } else {
        None
    }
}

/// Why a file that starts like a known container could not even have its
/// header read, when it was cut short: its header ends early (`eof`), or
/// an MP4's index (`moov`), which most encoders write last, is missing.
/// `None` for anything else (another decoder may read it).
pub(super) fn cut_short(path: &Path, eof: bool, reason: &str) -> Option<String> {
    let container = container_of(&head(path))?;
    if container == "MP4/M4A" && reason.contains("missing moov") {
        return Some(
            "its index (the MP4 \"moov\" box, written at the end) is missing: the file was cut short, \
             a download or copy that stopped? Fetch or copy it again"
                .into(),
        );
    }
    // (Not Ogg: symphonia reads an Ogg stream of a codec it does not know,
    // Speex, to its end looking for headers it knows.)
    (eof && container != "Ogg").then(|| {
        format!("it ends inside its {container} header: the file was cut short (a download or copy that stopped?)")
    })
}

/// What to call the audio of `path`, which the built-in decoders refused
/// with `err`; `None` when it is not known to be audio.
pub(super) fn codec_name(path: &Path, err: &DecodeError) -> Option<String> {
    let head = head(path);
    if let Some((_, name)) = MAGIC.iter().find(|(magic, _)| head.starts_with(magic)) {
        return Some((*name).to_string());
    }
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    if let Some((_, name)) = EXTENSIONS.iter().find(|(e, _)| Some(*e) == ext.as_deref()) {
        return Some((*name).to_string());
    }
    // A container the built-in decoders know, holding a codec they do not
    // (or a variant, such as HE-AAC in MP4, they stop at).
    let container = container_of(&head).filter(|c| *c != "FLAC")?;
    if container == "MP4/M4A" || container == "Matroska/WebM" {
        if let DecodeError::UnsupportedCodec { reason, .. } = err {
            if reason.contains("aac") {
                return Some(super::HE_AAC.to_string());
            }
        }
    }
    let detail = match err {
        DecodeError::UnsupportedCodec { reason, .. } | DecodeError::NotAudio { reason, .. } => reason.as_str(),
        _ => "no audio track the built-in decoders read",
    };
    Some(format!("the audio in this {container} file ({detail})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_audio_is_named_and_the_rest_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let err = |p: &Path| DecodeError::NotAudio { path: p.to_path_buf(), reason: "unknown".into() };
        let ac3 = dir.path().join("a.bin");
        std::fs::write(&ac3, [0x0B, 0x77, 0, 0, 0]).unwrap();
        assert!(codec_name(&ac3, &err(&ac3)).unwrap().contains("AC-3"));
        let wma = dir.path().join("song.WMA");
        std::fs::write(&wma, b"????").unwrap();
        assert!(codec_name(&wma, &err(&wma)).unwrap().contains("WMA"));
        let m4a = dir.path().join("he.m4a");
        std::fs::write(&m4a, b"\0\0\0\x20ftypM4A \0\0\0\0").unwrap();
        assert!(codec_name(&m4a, &err(&m4a)).unwrap().contains("MP4/M4A"));
        let rf64 = dir.path().join("long.wav");
        std::fs::write(&rf64, b"RF64\xff\xff\xff\xffWAVEds64").unwrap();
        assert!(codec_name(&rf64, &err(&rf64)).unwrap().contains("RF64"));
        let text = dir.path().join("notes.txt");
        std::fs::write(&text, b"hello, this is not audio").unwrap();
        assert_eq!(codec_name(&text, &err(&text)), None);
    }

    #[test]
    fn playlists_and_concat_scripts_are_media_lists() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, bytes: &[u8]| {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            p
        };
        assert!(is_media_list(&write("a.mp3", b"#EXTM3U\n#EXTINF:3,\n/srv/other/vocals.wav\n")));
        assert!(is_media_list(&write("b.wav", b"\xEF\xBB\xBF\n  #EXTM3U\n")));
        assert!(is_media_list(&write("c.flac", b"ffconcat version 1.0\nfile /x.wav\n")));
        assert!(!is_media_list(&write("d.mp3", b"ID3\x04\0\0\0\0\0\0")));
        // Behind an ID3 tag, which ffmpeg skips before guessing.
        assert!(is_media_list(&write("f.mp3", b"ID3\x04\0\0\0\0\0\x02ab#EXTM3U\n")));
        assert!(!is_media_list(&write("e.txt", b"")));
    }
}
