// The agent's .proto files against the envd wire contract. The expected
// lines were rendered from the descriptors embedded in the published `e2b`
// npm SDK (2.51.0), plus `EntryInfo.is_symlink = 12`, which current envd has
// and that SDK does not read yet. A difference here breaks e2b clients.
import { describe, expect, it } from 'vitest';
import { contractFingerprint } from '../test/descriptor-fingerprint.js';
// The generated source itself (not dist), so a stale build cannot hide a
// contract change; check-generated.mjs ties src/gen to proto/.
import { file_filesystem_filesystem } from '../../protocol/src/gen/filesystem/filesystem_pb.js';
import { file_process_process } from '../../protocol/src/gen/process/process_pb.js';

const envdProcessContract = `
  enum Signal SIGNAL_SIGKILL = 9
  enum Signal SIGNAL_SIGTERM = 15
  enum Signal SIGNAL_UNSPECIFIED = 0
  message CloseStdinRequest
  message CloseStdinRequest field 1 .process.ProcessSelector process
  message CloseStdinResponse
  message ConnectRequest
  message ConnectRequest field 1 .process.ProcessSelector process
  message ConnectResponse
  message ConnectResponse field 1 .process.ProcessEvent event
  message ListRequest
  message ListResponse
  message ListResponse field 1 repeated .process.ProcessInfo processes
  message PTY
  message PTY field 1 .process.PTY.Size size
  message PTY.Size
  message PTY.Size field 1 uint32 cols
  message PTY.Size field 2 uint32 rows
  message ProcessConfig
  message ProcessConfig field 1 string cmd
  message ProcessConfig field 2 repeated string args
  message ProcessConfig field 3 repeated .process.ProcessConfig.EnvsEntry envs
  message ProcessConfig field 4 optional string cwd
  message ProcessConfig.EnvsEntry
  message ProcessConfig.EnvsEntry field 1 string key
  message ProcessConfig.EnvsEntry field 2 string value
  message ProcessEvent
  message ProcessEvent field 1 .process.ProcessEvent.StartEvent start oneof event
  message ProcessEvent field 2 .process.ProcessEvent.DataEvent data oneof event
  message ProcessEvent field 3 .process.ProcessEvent.EndEvent end oneof event
  message ProcessEvent field 4 .process.ProcessEvent.KeepAlive keepalive oneof event
  message ProcessEvent.DataEvent
  message ProcessEvent.DataEvent field 1 bytes stdout oneof output
  message ProcessEvent.DataEvent field 2 bytes stderr oneof output
  message ProcessEvent.DataEvent field 3 bytes pty oneof output
  message ProcessEvent.EndEvent
  message ProcessEvent.EndEvent field 1 sint32 exit_code
  message ProcessEvent.EndEvent field 2 bool exited
  message ProcessEvent.EndEvent field 3 string status
  message ProcessEvent.EndEvent field 4 optional string error
  message ProcessEvent.KeepAlive
  message ProcessEvent.StartEvent
  message ProcessEvent.StartEvent field 1 uint32 pid
  message ProcessInfo
  message ProcessInfo field 1 .process.ProcessConfig config
  message ProcessInfo field 2 uint32 pid
  message ProcessInfo field 3 optional string tag
  message ProcessInput
  message ProcessInput field 1 bytes stdin oneof input
  message ProcessInput field 2 bytes pty oneof input
  message ProcessSelector
  message ProcessSelector field 1 uint32 pid oneof selector
  message ProcessSelector field 2 string tag oneof selector
  message SendInputRequest
  message SendInputRequest field 1 .process.ProcessSelector process
  message SendInputRequest field 2 .process.ProcessInput input
  message SendInputResponse
  message SendSignalRequest
  message SendSignalRequest field 1 .process.ProcessSelector process
  message SendSignalRequest field 2 .process.Signal signal
  message SendSignalResponse
  message StartRequest
  message StartRequest field 1 .process.ProcessConfig process
  message StartRequest field 2 optional .process.PTY pty
  message StartRequest field 3 optional string tag
  message StartRequest field 4 optional bool stdin
  message StartResponse
  message StartResponse field 1 .process.ProcessEvent event
  message StreamInputRequest
  message StreamInputRequest field 1 .process.StreamInputRequest.StartEvent start oneof event
  message StreamInputRequest field 2 .process.StreamInputRequest.DataEvent data oneof event
  message StreamInputRequest field 3 .process.StreamInputRequest.KeepAlive keepalive oneof event
  message StreamInputRequest.DataEvent
  message StreamInputRequest.DataEvent field 2 .process.ProcessInput input
  message StreamInputRequest.KeepAlive
  message StreamInputRequest.StartEvent
  message StreamInputRequest.StartEvent field 1 .process.ProcessSelector process
  message StreamInputResponse
  message UpdateRequest
  message UpdateRequest field 1 .process.ProcessSelector process
  message UpdateRequest field 2 optional .process.PTY pty
  message UpdateResponse
  package process
  service process.Process rpc CloseStdin(.process.CloseStdinRequest) returns (.process.CloseStdinResponse) unary-in unary-out
  service process.Process rpc Connect(.process.ConnectRequest) returns (.process.ConnectResponse) unary-in server-stream
  service process.Process rpc List(.process.ListRequest) returns (.process.ListResponse) unary-in unary-out
  service process.Process rpc SendInput(.process.SendInputRequest) returns (.process.SendInputResponse) unary-in unary-out
  service process.Process rpc SendSignal(.process.SendSignalRequest) returns (.process.SendSignalResponse) unary-in unary-out
  service process.Process rpc Start(.process.StartRequest) returns (.process.StartResponse) unary-in server-stream
  service process.Process rpc StreamInput(.process.StreamInputRequest) returns (.process.StreamInputResponse) client-stream unary-out
  service process.Process rpc Update(.process.UpdateRequest) returns (.process.UpdateResponse) unary-in unary-out
`;

const envdFilesystemContract = `
  enum EventType EVENT_TYPE_CHMOD = 5
  enum EventType EVENT_TYPE_CREATE = 1
  enum EventType EVENT_TYPE_REMOVE = 3
  enum EventType EVENT_TYPE_RENAME = 4
  enum EventType EVENT_TYPE_UNSPECIFIED = 0
  enum EventType EVENT_TYPE_WRITE = 2
  enum FileType FILE_TYPE_DIRECTORY = 2
  enum FileType FILE_TYPE_FILE = 1
  enum FileType FILE_TYPE_SYMLINK = 3
  enum FileType FILE_TYPE_UNSPECIFIED = 0
  message CreateWatcherRequest
  message CreateWatcherRequest field 1 string path
  message CreateWatcherRequest field 2 bool recursive
  message CreateWatcherRequest field 3 bool include_entry
  message CreateWatcherRequest field 4 bool allow_network_mounts
  message CreateWatcherResponse
  message CreateWatcherResponse field 1 string watcher_id
  message EntryInfo
  message EntryInfo field 1 string name
  message EntryInfo field 10 optional string symlink_target
  message EntryInfo field 11 repeated .filesystem.EntryInfo.MetadataEntry metadata
  message EntryInfo field 12 bool is_symlink
  message EntryInfo field 2 .filesystem.FileType type
  message EntryInfo field 3 string path
  message EntryInfo field 4 int64 size
  message EntryInfo field 5 uint32 mode
  message EntryInfo field 6 string permissions
  message EntryInfo field 7 string owner
  message EntryInfo field 8 string group
  message EntryInfo field 9 .google.protobuf.Timestamp modified_time
  message EntryInfo.MetadataEntry
  message EntryInfo.MetadataEntry field 1 string key
  message EntryInfo.MetadataEntry field 2 string value
  message FilesystemEvent
  message FilesystemEvent field 1 string name
  message FilesystemEvent field 2 .filesystem.EventType type
  message FilesystemEvent field 3 optional .filesystem.EntryInfo entry
  message GetWatcherEventsRequest
  message GetWatcherEventsRequest field 1 string watcher_id
  message GetWatcherEventsResponse
  message GetWatcherEventsResponse field 1 repeated .filesystem.FilesystemEvent events
  message ListDirRequest
  message ListDirRequest field 1 string path
  message ListDirRequest field 2 uint32 depth
  message ListDirResponse
  message ListDirResponse field 1 repeated .filesystem.EntryInfo entries
  message MakeDirRequest
  message MakeDirRequest field 1 string path
  message MakeDirResponse
  message MakeDirResponse field 1 .filesystem.EntryInfo entry
  message MoveRequest
  message MoveRequest field 1 string source
  message MoveRequest field 2 string destination
  message MoveResponse
  message MoveResponse field 1 .filesystem.EntryInfo entry
  message RemoveRequest
  message RemoveRequest field 1 string path
  message RemoveResponse
  message RemoveWatcherRequest
  message RemoveWatcherRequest field 1 string watcher_id
  message RemoveWatcherResponse
  message StatRequest
  message StatRequest field 1 string path
  message StatResponse
  message StatResponse field 1 .filesystem.EntryInfo entry
  message WatchDirRequest
  message WatchDirRequest field 1 string path
  message WatchDirRequest field 2 bool recursive
  message WatchDirRequest field 3 bool include_entry
  message WatchDirRequest field 4 bool allow_network_mounts
  message WatchDirResponse
  message WatchDirResponse field 1 .filesystem.WatchDirResponse.StartEvent start oneof event
  message WatchDirResponse field 2 .filesystem.FilesystemEvent filesystem oneof event
  message WatchDirResponse field 3 .filesystem.WatchDirResponse.KeepAlive keepalive oneof event
  message WatchDirResponse.KeepAlive
  message WatchDirResponse.StartEvent
  package filesystem
  service filesystem.Filesystem rpc CreateWatcher(.filesystem.CreateWatcherRequest) returns (.filesystem.CreateWatcherResponse) unary-in unary-out
  service filesystem.Filesystem rpc GetWatcherEvents(.filesystem.GetWatcherEventsRequest) returns (.filesystem.GetWatcherEventsResponse) unary-in unary-out
  service filesystem.Filesystem rpc ListDir(.filesystem.ListDirRequest) returns (.filesystem.ListDirResponse) unary-in unary-out
  service filesystem.Filesystem rpc MakeDir(.filesystem.MakeDirRequest) returns (.filesystem.MakeDirResponse) unary-in unary-out
  service filesystem.Filesystem rpc Move(.filesystem.MoveRequest) returns (.filesystem.MoveResponse) unary-in unary-out
  service filesystem.Filesystem rpc Remove(.filesystem.RemoveRequest) returns (.filesystem.RemoveResponse) unary-in unary-out
  service filesystem.Filesystem rpc RemoveWatcher(.filesystem.RemoveWatcherRequest) returns (.filesystem.RemoveWatcherResponse) unary-in unary-out
  service filesystem.Filesystem rpc Stat(.filesystem.StatRequest) returns (.filesystem.StatResponse) unary-in unary-out
  service filesystem.Filesystem rpc WatchDir(.filesystem.WatchDirRequest) returns (.filesystem.WatchDirResponse) unary-in server-stream
`;

const lines = (text: string) =>
  text
    .split('\n')
    .map((line) => line.trim())
    .filter(Boolean);

describe('wire contract', () => {
  it('process.proto matches envd exactly', () => {
    expect(contractFingerprint(file_process_process.proto)).toEqual(lines(envdProcessContract).sort());
  });

  it('filesystem.proto matches envd exactly', () => {
    expect(contractFingerprint(file_filesystem_filesystem.proto)).toEqual(lines(envdFilesystemContract).sort());
  });
});
