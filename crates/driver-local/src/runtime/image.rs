//! The node image: busybox-static as a root filesystem tarball, made once per host.

use super::*;

impl Runtime {
    /// busybox-static as a root filesystem tarball, made once.
    pub(super) async fn node_rootfs(&self) -> Result<PathBuf, DriverError> {
        let tarball = self.state_dir.join("images").join("local-node-rootfs.tar");
        if tarball.exists() {
            return Ok(tarball);
        }
        let root = self.state_dir.join("images").join("rootfs");
        // The scratch tree of an interrupted earlier build, if any; absent is the usual case.
        let _ = std::fs::remove_dir_all(&root);
        for directory in ["bin", "etc", "www", "tmp"] {
            std::fs::create_dir_all(root.join(directory))
                .map_err(|error| failed(format!("cannot build the node image: {error}")))?;
        }
        std::fs::copy("/bin/busybox", root.join("bin/busybox")).map_err(|error| {
            failed(format!("cannot build the node image from /bin/busybox (apt-get install busybox-static): {error}"))
        })?;
        let applets = run("/bin/busybox", &["--list"]).await?;
        let image_error =
            |error: std::io::Error| failed(format!("cannot build the node image: {error}"));
        for applet in applets.lines().filter(|applet| *applet != "busybox") {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))
                .map_err(image_error)?;
        }
        std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n")
            .map_err(image_error)?;
        std::fs::write(root.join("www/index.html"), "magnum-rs local node\n")
            .map_err(image_error)?;
        let partial = tarball.with_extension("partial");
        run(
            "tar",
            &[
                "-C",
                &root.display().to_string(),
                "-cf",
                &partial.display().to_string(),
                ".",
            ],
        )
        .await?;
        std::fs::rename(&partial, &tarball)
            .map_err(|error| failed(format!("cannot build the node image: {error}")))?;
        // The image is made; a scratch tree left behind is removed by the next build.
        let _ = std::fs::remove_dir_all(&root);
        Ok(tarball)
    }
}
