//! `camera-tool`: an MCP server over stdio with camera-like tools, for the
//! testnet's edge gateway and the tests. Each `--camera NAME` is a tool
//! `camera-NAME` that "takes a photo": a PNG drawn for that camera and frame
//! (a gradient with a bar that moves from frame to frame, so two photos
//! differ), and a line of JSON saying which camera, which frame, its size.
//! A node runs it as an `[[mcp]]` server with `command = "camera-tool"`.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine;
use clap::Parser;
use serde_json::{Map, Value, json};

use atmosphere::mcp::stdio::{Block, Offer, Toolbox, serve};

#[derive(Parser)]
#[command(about = "An MCP server (stdio) whose tools take photos with made-up cameras")]
struct Args {
    /// A camera, offered as the tool `camera-NAME`; repeat for more.
    #[arg(long = "camera", default_value = "front")]
    cameras: Vec<String>,
    /// Where the cameras are, said in every tool's description.
    #[arg(long, default_value = "the gateway")]
    place: String,
}

struct Cameras {
    names: Vec<String>,
    place: String,
    frames: AtomicU64,
}

/// A photo's size at each resolution.
fn size(resolution: &str) -> (u32, u32) {
    match resolution {
        "high" => (640, 480),
        _ => (160, 120),
    }
}

/// A frame of `camera` as PNG: colours from the camera's name, a bar whose
/// place follows the frame number, `zoom` narrowing the gradient.
fn draw(
    camera: &str,
    frame: u64,
    (width, height): (u32, u32),
    zoom: f64,
) -> Result<Vec<u8>, png::EncodingError> {
    let tint = camera
        .bytes()
        .fold(0u8, |a, b| a.wrapping_mul(31).wrapping_add(b));
    let bar = (frame * 13 % u64::from(width)) as u32;
    let mut pixels = Vec::with_capacity((width * height * 3) as usize);
    for y in 0..height {
        for x in 0..width {
            let fx = (f64::from(x) * zoom) as u32 % width;
            let r = (fx * 255 / width) as u8;
            let g = (y * 255 / height) as u8;
            let on_bar = x.abs_diff(bar) < width / 40 + 1;
            pixels.extend_from_slice(&if on_bar {
                [255, 255, 255]
            } else {
                [r, g, tint]
            });
        }
    }
    let mut png = Vec::new();
    let mut encoder = png::Encoder::new(&mut png, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(&pixels)?;
    writer.finish()?;
    Ok(png)
}

impl Toolbox for Cameras {
    fn offers(&self) -> Vec<Offer> {
        let schema = json!({
            "type": "object",
            "properties": {
                "resolution": {
                    "type": "string",
                    "enum": ["low", "high"],
                    "description": "low: 160x120 (the default), high: 640x480",
                },
                "zoom": {"type": "number", "minimum": 1, "maximum": 8},
            },
            "additionalProperties": false,
        });
        let Value::Object(schema) = schema else {
            unreachable!("a JSON object literal")
        };
        self.names
            .iter()
            .map(|name| Offer {
                name: format!("camera-{name}"),
                description: format!(
                    "Takes a photo with the {name} camera of {} and returns it as a PNG image.",
                    self.place
                ),
                input_schema: schema.clone(),
            })
            .collect()
    }

    fn call(&self, tool: &str, arguments: Map<String, Value>) -> Result<Vec<Block>, String> {
        let camera = tool
            .strip_prefix("camera-")
            .filter(|c| self.names.iter().any(|n| n == c))
            .ok_or_else(|| format!("no camera for the tool {tool}"))?;
        let resolution = arguments
            .get("resolution")
            .and_then(Value::as_str)
            .unwrap_or("low");
        let zoom = arguments.get("zoom").and_then(Value::as_f64).unwrap_or(1.0);
        let frame = self.frames.fetch_add(1, Ordering::Relaxed) + 1;
        let (width, height) = size(resolution);
        let png = draw(camera, frame, (width, height), zoom)
            .map_err(|e| format!("the {camera} camera could not encode its photo: {e}"))?;
        let about = json!({
            "camera": camera,
            "frame": frame,
            "width": width,
            "height": height,
            "zoom": zoom,
            "bytes": png.len(),
        });
        Ok(vec![
            Block::Image {
                data: base64::engine::general_purpose::STANDARD.encode(&png),
                mime_type: "image/png".into(),
            },
            Block::Text(about.to_string()),
        ])
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = Args::parse();
    let cameras = Cameras {
        names: args.cameras,
        place: args.place,
        frames: AtomicU64::new(0),
    };
    if let Err(e) = serve(cameras).await {
        // stdout is the protocol's: the reason goes to stderr, which the
        // node logs.
        let _ = writeln!(std::io::stderr(), "camera-tool: {e}");
        std::process::exit(1);
    }
}
