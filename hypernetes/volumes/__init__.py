"""Block volume backends for persistent volumes: local files now (`LocalVolumes`), Ceph RBD later.

A backend makes, grows and deletes the disk behind a PersistentVolume on the node that owns it;
the runtime attaches the disk to the pod's VM. See docs/volumes.md.
"""

from hypernetes.volumes.local import FORMATS, FS_TYPES, LocalVolumes, VolumeError, check_handle

__all__ = ["FORMATS", "FS_TYPES", "LocalVolumes", "VolumeError", "check_handle"]
