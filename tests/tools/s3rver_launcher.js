// s3rver_launcher.js - run s3rver's CLI, with one fix that makes it store objects the way S3 does.
//
// s3rver streams a PUT's body straight into the object's file. When the client dies mid-upload
// (the crash tests kill kbackup at random points), the truncated file stays and s3rver then serves
// it as a complete object of the truncated size. S3 never does that: an upload that does not
// finish stores nothing. So the body goes to a temporary file that is renamed onto the object's
// name only once the whole body has arrived, and is removed otherwise.
'use strict';

const fs = require('fs');
const { pipeline, Readable, Transform } = require('stream');
const crypto = require('crypto');
const FilesystemStore = require('@20minutes/s3rver/lib/stores/filesystem');

let serial = 0;

FilesystemStore.prototype.putContent = function putContent(objectPath, content) {
  // The name does not end in "._S3rver_object", so listings never show it.
  const tmp = `${objectPath}.upload-${process.pid}-${++serial}`;
  const md5 = crypto.createHash('md5');
  let length = 0;
  const source = Buffer.isBuffer(content) ? Readable.from([content]) : content;
  return new Promise((resolve, reject) => {
    pipeline(
      source,
      new Transform({
        transform(chunk, encoding, callback) {
          md5.update(chunk, encoding);
          length += chunk.length;
          callback(null, chunk);
        },
      }),
      fs.createWriteStream(tmp),
      (err) => {
        if (err) {
          fs.rm(tmp, { force: true }, () => reject(err));
          return;
        }
        fs.rename(tmp, objectPath, (renameErr) => {
          if (renameErr) fs.rm(tmp, { force: true }, () => reject(renameErr));
          else resolve([length, md5.digest('hex')]);
        });
      },
    );
  });
};

require('@20minutes/s3rver/lib/cli').parseAsync(process.argv);
