//! A disk that can lose power: an ext4 file system in an image file, mounted through a
//! loop device, under a private server's store ([`Hook::PowerLoss`](super::Hook)).
//!
//! A power loss keeps what reached the disk and drops what was still in the page
//! cache. Here the disk is the image file: [`LoopDisk::lose_power`] copies the image as
//! it stands (what the file system wrote to its device: what was synced, and what the
//! kernel happened to write back), throws the mounted one away with everything its page
//! cache held, and mounts the copy, whose journal ext4 replays as after a crash. The
//! file system is mounted with `commit=300`, so that nothing but a sync (an `fsync` of
//! the server's own, or a `sync` of the whole machine) moves a write to the device
//! within the five minutes a case lasts at most: what a power loss drops is then what
//! the server did not sync, whatever the timing.
//!
//! It needs root, `losetup`, `mkfs.ext4` and a free loop device; without them the hook
//! is not offered (the reason is shown in the matrix).

use std::path::{Path, PathBuf};
use std::process::Command;

use distsync_core::Result;

use super::hook_error;
use super::tools::{is_root, require};

/// The image's size: sparse, so only what the store writes takes space.
const IMAGE_SIZE: &str = "256M";

/// Whether a loop disk can be made here, or why not.
pub fn available() -> std::result::Result<(), String> {
    if !is_root() {
        return Err("a loop-mounted disk needs root (mount, losetup)".to_owned());
    }
    if !Path::new("/dev/loop-control").exists() {
        return Err("no loop devices (/dev/loop-control)".to_owned());
    }
    for (program, package) in [
        ("losetup", "mount"),
        ("mount", "mount"),
        ("umount", "mount"),
        ("mkfs.ext4", "e2fsprogs"),
        ("cp", "coreutils"),
    ] {
        require(program, package)?;
    }
    Ok(())
}

/// An ext4 image mounted through a loop device at [`LoopDisk::path`]; unmounted, its
/// device detached and its images removed when dropped.
#[derive(Debug)]
pub struct LoopDisk {
    dir: PathBuf,
    image: PathBuf,
    device: Option<String>,
    /// How many power losses it went through: each names the next image.
    losses: u32,
}

impl LoopDisk {
    /// Makes an image in `dir`, formats it and mounts it at `dir/mnt`.
    ///
    /// # Errors
    /// When a tool fails (no free loop device, no permission).
    pub fn create(dir: &Path) -> Result<Self> {
        available().map_err(|reason| hook_error("making a loop disk", reason))?;
        let image = dir.join("disk-0.img");
        run("truncate", &["-s", IMAGE_SIZE, &display(&image)])?;
        run("mkfs.ext4", &["-q", "-F", &display(&image)])?;
        let mut disk = Self {
            dir: dir.to_owned(),
            image,
            device: None,
            losses: 0,
        };
        std::fs::create_dir_all(disk.path())
            .map_err(|error| hook_error("making the mount point", error))?;
        disk.mount()?;
        Ok(disk)
    }

    /// Where the file system is mounted.
    pub fn path(&self) -> PathBuf {
        self.dir.join("mnt")
    }

    /// Loses power under a server that no longer runs (the caller killed it): the disk
    /// keeps what its file system wrote to the device, the rest is gone, and the copy
    /// is mounted in its place (see the module docs).
    ///
    /// # Errors
    /// When a tool fails.
    pub fn lose_power(&mut self) -> Result<()> {
        self.losses += 1;
        let copy = self.dir.join(format!("disk-{}.img", self.losses));
        run(
            "cp",
            &["--sparse=always", &display(&self.image), &display(&copy)],
        )?;
        self.unmount();
        let _ = std::fs::remove_file(&self.image);
        self.image = copy;
        self.mount()
    }

    /// Attaches the image to a free loop device and mounts it.
    fn mount(&mut self) -> Result<()> {
        let device = run("losetup", &["-f", "--show", &display(&self.image)])?;
        let device = device.trim().to_owned();
        self.device = Some(device.clone());
        run(
            "mount",
            &["-o", "commit=300", &device, &display(&self.path())],
        )
        .map(drop)
    }

    /// Unmounts at once (lazily: a dead server's files may still be closing) and
    /// detaches the device; what its page cache held is dropped with it.
    fn unmount(&mut self) {
        let Some(device) = self.device.take() else {
            return;
        };
        if let Err(error) = run("umount", &["-l", &display(&self.path())]) {
            tracing::warn!(%error, "unmounting a loop disk");
        }
        if let Err(error) = run("losetup", &["-d", &device]) {
            tracing::warn!(%error, device, "detaching a loop device");
        }
    }
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        self.unmount();
        let _ = std::fs::remove_file(&self.image);
    }
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

/// Runs `program args...` to completion; its standard output.
fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|error| hook_error(format!("running {program}"), error))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(hook_error(
            format!("{program} {}", args.join(" ")),
            String::from_utf8_lossy(&out.stderr).trim(),
        ))
    }
}
