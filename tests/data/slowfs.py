"""A passthrough FUSE filesystem whose fsync and fdatasync take DELAY seconds: a slow disk for
tests/wal.rs. Usage: slowfs.py BACKING_DIR MOUNTPOINT DELAY (runs until unmounted).
Needs Debian's python3-fusepy and fuse3."""

import os, sys, time, errno
from fusepy import FUSE, Operations, FuseOSError

class Slow(Operations):
    def __init__(self, root, delay):
        self.root = root; self.delay = delay
    def _p(self, path): return os.path.join(self.root, path.lstrip('/'))
    def getattr(self, path, fh=None):
        try:
            st = os.lstat(self._p(path))
        except OSError as e:
            raise FuseOSError(e.errno)
        return {k: getattr(st, k) for k in ('st_atime','st_ctime','st_gid','st_mode','st_mtime','st_nlink','st_size','st_uid')}
    def readdir(self, path, fh): return ['.', '..'] + os.listdir(self._p(path))
    def mkdir(self, path, mode): os.mkdir(self._p(path), mode)
    def rmdir(self, path): os.rmdir(self._p(path))
    def unlink(self, path): os.unlink(self._p(path))
    def rename(self, old, new): os.rename(self._p(old), self._p(new))
    def chmod(self, path, mode): os.chmod(self._p(path), mode)
    def utimens(self, path, times=None): os.utime(self._p(path), times)
    def open(self, path, flags): return os.open(self._p(path), flags & ~os.O_DIRECT)
    def create(self, path, mode, fi=None): return os.open(self._p(path), os.O_WRONLY | os.O_CREAT, mode)
    def read(self, path, size, offset, fh): return os.pread(fh, size, offset)
    def write(self, path, data, offset, fh): return os.pwrite(fh, data, offset)
    def truncate(self, path, length, fh=None):
        with open(self._p(path), 'r+') as f: f.truncate(length)
    def flush(self, path, fh): return 0
    def release(self, path, fh): os.close(fh); return 0
    def fsync(self, path, datasync, fh):
        time.sleep(self.delay); os.fsync(fh); return 0
    def statfs(self, path):
        st = os.statvfs(self._p(path))
        return {k: getattr(st, k) for k in ('f_bavail','f_bfree','f_blocks','f_bsize','f_favail','f_ffree','f_files','f_flag','f_frsize','f_namemax')}

if __name__ == '__main__':
    FUSE(Slow(sys.argv[1], float(sys.argv[3])), sys.argv[2], foreground=True, nothreads=False, allow_other=False)
