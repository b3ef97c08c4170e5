//! `histflow reload` and `histflow graph --url`: asking a running process
//! over its API or admin listener.

use std::process::ExitCode;

use crate::topology_file::EXIT_BAD_TOPOLOGY;

/// Exit code when the process could not be asked, or failed.
const EXIT_FAILED: u8 = 1;

fn request(method: reqwest::Method, url: &str, token: Option<&str>) -> Result<(u16, String), String> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|error| error.to_string())?;
    runtime.block_on(async {
        let client = reqwest::Client::new();
        let mut request = client.request(method, url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|error| format!("cannot reach {url}: {error}"))?;
        let status = response.status().as_u16();
        let body = response.text().await.map_err(|error| format!("{url}: {error}"))?;
        Ok((status, body))
    })
}

/// `POST <url>/admin/reload`; prints the answer.
pub fn reload(url: &str, token: Option<&str>) -> ExitCode {
    let url = format!("{}/admin/reload", url.trim_end_matches('/'));
    answer(&url, request(reqwest::Method::POST, &url, token), |status| match status {
        200 => Some(ExitCode::SUCCESS),
        422 => Some(ExitCode::from(EXIT_BAD_TOPOLOGY)),
        _ => None,
    })
}

/// `GET <url>/admin/topology?format=...`; prints the running graph.
pub fn graph(url: &str, token: Option<&str>, format: &str) -> ExitCode {
    let url = format!("{}/admin/topology?format={format}", url.trim_end_matches('/'));
    answer(&url, request(reqwest::Method::GET, &url, token), |status| (status == 200).then_some(ExitCode::SUCCESS))
}

/// Prints a body whose status `expected` maps to an exit code; anything
/// else goes to stderr and exits 1.
fn answer(url: &str, answered: Result<(u16, String), String>, expected: impl Fn(u16) -> Option<ExitCode>) -> ExitCode {
    match answered {
        Ok((status, body)) => match expected(status) {
            Some(code) => {
                print!("{}", if body.ends_with('\n') { body } else { format!("{body}\n") });
                code
            }
            None => {
                eprintln!("{url} answered {status}: {body}");
                ExitCode::from(EXIT_FAILED)
            }
        },
        Err(problem) => {
            eprintln!("{problem}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}
