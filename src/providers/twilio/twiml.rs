//! TwiML documents we answer Twilio with: stream a call to us, turn it away,
//! transfer it. Every text and attribute is XML-escaped, and characters XML
//! 1.0 cannot carry (most C0 controls) are dropped, so tenant-supplied text
//! (consent announcements) can never change the document's structure.

use crate::providers::model::{Announcement, Rejection, StreamAnswer, StreamMode, TransferTarget};
use crate::providers::ProviderError;

/// `Content-Type` of a TwiML answer.
pub const CONTENT_TYPE: &str = "text/xml; charset=utf-8";

/// Longest `<Say>` text Twilio speaks.
pub const MAX_SAY_CHARS: usize = 4096;
/// Longest keep-alive after `<Start><Stream>` (Twilio's default call time limit).
pub const MAX_KEEP_ALIVE_SECS: u32 = 4 * 3600;

/// `<Say>` (optional), then `<Connect><Stream>` or `<Start><Stream
/// track="both_tracks">` + `<Pause>`, with `<Parameter>`s.
pub fn answer(answer: &StreamAnswer) -> Result<String, ProviderError> {
    if !matches!(answer.stream_url.scheme(), "wss" | "ws") {
        return Err(invalid(
            "stream URL must be wss:// (or ws:// for local testing)",
        ));
    }
    if let Some(a) = &answer.announcement {
        check_announcement(a)?;
    }
    if answer
        .parameters
        .iter()
        .any(|(name, _)| name.trim().is_empty())
    {
        return Err(invalid("stream parameter names must not be empty"));
    }
    let mut x = Xml::document();
    if let Some(a) = &answer.announcement {
        x.say(a);
    }
    let verb = match answer.mode {
        StreamMode::Bidirectional => "Connect",
        StreamMode::ForkBothTracks { .. } => "Start",
    };
    x.open(verb, &[]);
    let mut attrs: Vec<(&str, &str)> = vec![("url", answer.stream_url.as_str())];
    if let Some(name) = &answer.stream_name {
        attrs.push(("name", name));
    }
    if matches!(answer.mode, StreamMode::ForkBothTracks { .. }) {
        attrs.push(("track", "both_tracks"));
    }
    if let Some(cb) = &answer.status_callback {
        attrs.push(("statusCallback", cb.as_str()));
        attrs.push(("statusCallbackMethod", "POST"));
    }
    if answer.parameters.is_empty() {
        x.empty("Stream", &attrs);
    } else {
        x.open("Stream", &attrs);
        for (name, value) in &answer.parameters {
            x.empty("Parameter", &[("name", name), ("value", value)]);
        }
        x.close("Stream");
    }
    x.close(verb);
    if let StreamMode::ForkBothTracks { keep_alive_secs } = answer.mode {
        if !(1..=MAX_KEEP_ALIVE_SECS).contains(&keep_alive_secs) {
            return Err(invalid("keep-alive must be between 1 s and 4 h"));
        }
        x.empty("Pause", &[("length", &keep_alive_secs.to_string())]);
    }
    Ok(x.finish())
}

/// `<Reject reason="busy|rejected"/>`, or `<Say>…</Say><Hangup/>`.
/// Over-long text is cut to [`MAX_SAY_CHARS`] rather than failing: a
/// rejection must always produce a document.
pub fn reject(rejection: &Rejection) -> String {
    let mut x = Xml::document();
    match rejection {
        Rejection::Reject { busy } => {
            x.empty(
                "Reject",
                &[("reason", if *busy { "busy" } else { "rejected" })],
            );
        }
        Rejection::Explain(a) => {
            let mut a = a.clone();
            if let Some((cut, _)) = a.text.char_indices().nth(MAX_SAY_CHARS) {
                a.text.truncate(cut);
            }
            if !a.text.trim().is_empty() {
                x.say(&a);
            }
            x.empty("Hangup", &[]);
        }
    }
    x.finish()
}

/// `<Say>` (optional) then `<Dial callerId timeout><Number>…</Number></Dial>`.
pub fn transfer(target: &TransferTarget) -> Result<String, ProviderError> {
    if let Some(a) = &target.announcement {
        check_announcement(a)?;
    }
    let mut x = Xml::document();
    if let Some(a) = &target.announcement {
        x.say(a);
    }
    let timeout = target.ring_timeout_secs.map(|t| t.to_string());
    let mut attrs = Vec::new();
    if let Some(id) = &target.caller_id {
        attrs.push(("callerId", id.as_str()));
    }
    if let Some(t) = &timeout {
        attrs.push(("timeout", t.as_str()));
    }
    x.open("Dial", &attrs);
    x.open("Number", &[]);
    x.text(target.to.as_str());
    x.close("Number");
    x.close("Dial");
    Ok(x.finish())
}

fn check_announcement(a: &Announcement) -> Result<(), ProviderError> {
    if a.text.trim().is_empty() {
        return Err(invalid("announcement text must not be empty"));
    }
    if a.text.chars().count() > MAX_SAY_CHARS {
        return Err(invalid("announcement text is longer than 4096 characters"));
    }
    Ok(())
}

fn invalid(msg: &str) -> ProviderError {
    ProviderError::InvalidRequest(msg.to_string())
}

/// A minimal XML writer: elements, attributes and text, all escaped.
struct Xml {
    out: String,
}

impl Xml {
    fn document() -> Self {
        Self {
            out: String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response>"),
        }
    }

    fn finish(mut self) -> String {
        self.out.push_str("</Response>");
        self.out
    }

    fn say(&mut self, a: &Announcement) {
        let mut attrs = Vec::new();
        if let Some(v) = &a.voice {
            attrs.push(("voice", v.as_str()));
        }
        if let Some(l) = &a.language {
            attrs.push(("language", l.as_str()));
        }
        self.open("Say", &attrs);
        self.text(&a.text);
        self.close("Say");
    }

    fn start_tag(&mut self, name: &str, attrs: &[(&str, &str)]) {
        self.out.push('<');
        self.out.push_str(name);
        for (k, v) in attrs {
            self.out.push(' ');
            self.out.push_str(k);
            self.out.push_str("=\"");
            escape_into(&mut self.out, v);
            self.out.push('"');
        }
    }

    fn open(&mut self, name: &str, attrs: &[(&str, &str)]) {
        self.start_tag(name, attrs);
        self.out.push('>');
    }

    fn empty(&mut self, name: &str, attrs: &[(&str, &str)]) {
        self.start_tag(name, attrs);
        self.out.push_str("/>");
    }

    fn close(&mut self, name: &str) {
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push('>');
    }

    fn text(&mut self, s: &str) {
        escape_into(&mut self.out, s);
    }
}

/// Escapes for both text and double-quoted attributes. Tabs and newlines in
/// attributes are written as character references so parsers keep them.
fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            c if is_xml_char(c) => out.push(c),
            _ => {}
        }
    }
}

/// XML 1.0 `Char`, less the whitespace handled above.
fn is_xml_char(c: char) -> bool {
    matches!(c, '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phone::E164;
    use url::Url;

    fn parse(doc: &str) -> roxmltree::Document<'_> {
        roxmltree::Document::parse(doc).unwrap_or_else(|e| panic!("{e}: {doc}"))
    }

    fn children<'a, 'i>(n: roxmltree::Node<'a, 'i>) -> Vec<roxmltree::Node<'a, 'i>> {
        n.children().filter(|c| c.is_element()).collect()
    }

    fn answer_with(mode: StreamMode, announcement: Option<&str>) -> StreamAnswer {
        StreamAnswer {
            announcement: announcement.map(Announcement::text),
            stream_url: Url::parse("wss://gw.example.com/v1/providers/twilio/stream").unwrap(),
            mode,
            parameters: vec![("token".into(), "v1.t\"<&>'.CA1.99.sig".into())],
            status_callback: Some(
                Url::parse("https://gw.example.com/v1/providers/twilio/status?a=1&b=2").unwrap(),
            ),
            stream_name: None,
        }
    }

    #[test]
    fn connect_stream_with_hostile_announcement_and_token() {
        let hostile = "This call is recorded </Say><Hangup/> & <b>\"quoted\"</b> 'x'\u{1}\u{7}";
        let doc = answer(&answer_with(StreamMode::Bidirectional, Some(hostile))).unwrap();
        let xml = parse(&doc);
        let root = xml.root_element();
        assert_eq!(root.tag_name().name(), "Response");
        let verbs = children(root);
        assert_eq!(
            verbs
                .iter()
                .map(|n| n.tag_name().name())
                .collect::<Vec<_>>(),
            ["Say", "Connect"]
        );
        // The text survives intact, minus the control characters XML cannot hold.
        assert_eq!(
            verbs[0].text().unwrap(),
            "This call is recorded </Say><Hangup/> & <b>\"quoted\"</b> 'x'"
        );
        let stream = children(verbs[1])[0];
        assert_eq!(stream.tag_name().name(), "Stream");
        assert_eq!(
            stream.attribute("url"),
            Some("wss://gw.example.com/v1/providers/twilio/stream")
        );
        assert_eq!(
            stream.attribute("track"),
            None,
            "bidirectional streams take inbound only"
        );
        assert_eq!(
            stream.attribute("statusCallback"),
            Some("https://gw.example.com/v1/providers/twilio/status?a=1&b=2")
        );
        let param = children(stream)[0];
        assert_eq!(param.attribute("name"), Some("token"));
        assert_eq!(param.attribute("value"), Some("v1.t\"<&>'.CA1.99.sig"));
    }

    #[test]
    fn start_stream_both_tracks_then_keep_alive() {
        let doc = answer(&answer_with(
            StreamMode::ForkBothTracks {
                keep_alive_secs: 3600,
            },
            None,
        ))
        .unwrap();
        let xml = parse(&doc);
        let verbs = children(xml.root_element());
        assert_eq!(
            verbs
                .iter()
                .map(|n| n.tag_name().name())
                .collect::<Vec<_>>(),
            ["Start", "Pause"]
        );
        let stream = children(verbs[0])[0];
        assert_eq!(stream.attribute("track"), Some("both_tracks"));
        assert_eq!(verbs[1].attribute("length"), Some("3600"));
    }

    #[test]
    fn answer_refuses_bad_plans() {
        let mut a = answer_with(StreamMode::Bidirectional, None);
        a.stream_url = Url::parse("https://gw.example.com/stream").unwrap();
        assert!(matches!(answer(&a), Err(ProviderError::InvalidRequest(_))));
        let a = answer_with(StreamMode::ForkBothTracks { keep_alive_secs: 0 }, None);
        assert!(answer(&a).is_err());
        let a = answer_with(StreamMode::Bidirectional, Some("   "));
        assert!(answer(&a).is_err());
        let long = "a".repeat(MAX_SAY_CHARS + 1);
        let a = answer_with(StreamMode::Bidirectional, Some(&long));
        assert!(answer(&a).is_err());
        let mut a = answer_with(StreamMode::Bidirectional, None);
        a.parameters.push((" ".into(), "x".into()));
        assert!(answer(&a).is_err());
    }

    #[test]
    fn rejections() {
        let busy = reject(&Rejection::Reject { busy: true });
        let xml = parse(&busy);
        let verbs = children(xml.root_element());
        assert_eq!(verbs.len(), 1);
        assert_eq!(verbs[0].tag_name().name(), "Reject");
        assert_eq!(verbs[0].attribute("reason"), Some("busy"));
        let plain = reject(&Rejection::Reject { busy: false });
        assert_eq!(
            children(parse(&plain).root_element())[0].attribute("reason"),
            Some("rejected")
        );

        let polite = reject(&Rejection::Explain(Announcement {
            text: "Sorry, we can't take calls right now & <please> call later.".into(),
            voice: Some("Polly.Joanna".into()),
            language: Some("en-US".into()),
        }));
        let xml = parse(&polite);
        let verbs = children(xml.root_element());
        assert_eq!(
            verbs
                .iter()
                .map(|n| n.tag_name().name())
                .collect::<Vec<_>>(),
            ["Say", "Hangup"]
        );
        assert_eq!(
            verbs[0].text(),
            Some("Sorry, we can't take calls right now & <please> call later.")
        );
        assert_eq!(verbs[0].attribute("voice"), Some("Polly.Joanna"));
        assert_eq!(verbs[0].attribute("language"), Some("en-US"));

        // Too long is cut, not refused; empty text leaves just the hangup.
        let long = reject(&Rejection::Explain(Announcement::text("é".repeat(5000))));
        let xml = parse(&long);
        assert_eq!(
            children(xml.root_element())[0]
                .text()
                .unwrap()
                .chars()
                .count(),
            MAX_SAY_CHARS
        );
        let empty = reject(&Rejection::Explain(Announcement::text("")));
        let xml = parse(&empty);
        assert_eq!(children(xml.root_element()).len(), 1);
    }

    #[test]
    fn transfer_dials_the_number() {
        let doc = transfer(&TransferTarget {
            to: E164::parse("+14155550123").unwrap(),
            caller_id: Some(E164::parse("+14155550100").unwrap()),
            announcement: Some(Announcement::text("Transferring you now.")),
            ring_timeout_secs: Some(25),
        })
        .unwrap();
        let xml = parse(&doc);
        let verbs = children(xml.root_element());
        assert_eq!(verbs[0].tag_name().name(), "Say");
        let dial = verbs[1];
        assert_eq!(dial.tag_name().name(), "Dial");
        assert_eq!(dial.attribute("callerId"), Some("+14155550100"));
        assert_eq!(dial.attribute("timeout"), Some("25"));
        let number = children(dial)[0];
        assert_eq!(number.tag_name().name(), "Number");
        assert_eq!(number.text(), Some("+14155550123"));
    }

    #[test]
    fn attribute_whitespace_survives_parsing() {
        let mut a = answer_with(StreamMode::Bidirectional, None);
        a.parameters = vec![("note".into(), "line1\nline2\tend\r".into())];
        let doc = answer(&a).unwrap();
        let xml = parse(&doc);
        let p = xml
            .descendants()
            .find(|n| n.has_tag_name("Parameter"))
            .unwrap();
        assert_eq!(p.attribute("value"), Some("line1\nline2\tend\r"));
    }
}
