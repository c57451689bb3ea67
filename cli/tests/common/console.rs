//! Talking to a `coordctl console` process over plain HTTP/1.1, as a
//! browser would (one request per connection).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// One HTTP/1.1 exchange with the console at `addr`: (status, headers in
/// lower case, body).
pub fn http(addr: &str, request: &str) -> (u16, String, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("the console listens");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_lowercase(), body.to_string())
}

/// A console started by `coordctl console`: its address and session cookie.
pub struct ConsoleProcess {
    child: Child,
    /// Where it listens.
    pub addr: String,
    /// Its session cookie.
    pub cookie: String,
}

impl ConsoleProcess {
    /// Start `command` (a `coordctl … console`); log in with `token` (or
    /// the one it prints).
    pub fn start(command: &mut Command, token: Option<&str>) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("coordctl starts");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().expect("stdout"))
            .read_line(&mut line)
            .expect("reads");
        let url = line
            .trim()
            .split_once(": ")
            .map(|(_, url)| url.to_string())
            .unwrap_or_else(|| panic!("no address printed: {line:?}"));
        let addr = url
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap()
            .to_string();
        let login = match token {
            Some(t) => {
                assert!(!line.contains(t), "a fixed token is never printed: {line}");
                format!("/login?token={t}")
            }
            None => url[url.find("/login").unwrap()..].to_string(),
        };
        let (status, head, _) = http(
            &addr,
            &format!("GET {login} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
        );
        assert_eq!(status, 303, "{head}");
        let cookie = head
            .lines()
            .find_map(|l| l.strip_prefix("set-cookie: "))
            .and_then(|c| c.split(';').next())
            .expect("a cookie")
            .to_string();
        ConsoleProcess {
            child,
            addr,
            cookie,
        }
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nCookie: {}\r\nConnection: close\r\n\r\n",
            self.addr, self.cookie
        );
        let (status, _, body) = http(&self.addr, &request);
        (status, body)
    }

    pub fn post(&self, path: &str, origin: &str, form: &str) -> (u16, String) {
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nCookie: {}\r\nOrigin: {origin}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{form}",
            self.addr,
            self.cookie,
            form.len()
        );
        let (status, _, body) = http(&self.addr, &request);
        (status, body)
    }

    /// Stop it with SIGTERM: it exits 0.
    pub fn stop(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let status = self.child.wait().unwrap();
        assert_eq!(status.code(), Some(0), "exits cleanly on SIGTERM");
    }
}

/// The value of the first form field `name` in `html`.
pub fn form_field(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let at = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no field {name}: {html}"))
        + marker.len();
    html[at..at + html[at..].find('"').unwrap()].to_string()
}
