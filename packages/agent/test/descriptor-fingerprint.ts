// Renders a .proto file's wire contract (package, messages, field names,
// numbers, types, labels, oneofs, enums, services and streaming kinds) as
// sorted text lines, leaving out comments, options and layout, so two
// independently written .proto files can be compared for wire compatibility.

import { isFieldSet } from '@bufbuild/protobuf';
import {
  FieldDescriptorProto_Label,
  FieldDescriptorProto_Type,
  FieldDescriptorProtoSchema,
  type DescriptorProto,
  type FileDescriptorProto,
} from '@bufbuild/protobuf/wkt';

function renderType(type: FieldDescriptorProto_Type, typeName: string): string {
  if (type === FieldDescriptorProto_Type.MESSAGE || type === FieldDescriptorProto_Type.ENUM) return typeName;
  return FieldDescriptorProto_Type[type].toLowerCase();
}

function renderMessage(message: DescriptorProto, prefix: string, lines: string[]): void {
  const name = `${prefix}${message.name}`;
  lines.push(`message ${name}`);
  for (const field of message.field) {
    const label = field.label === FieldDescriptorProto_Label.REPEATED ? 'repeated ' : field.proto3Optional ? 'optional ' : '';
    // proto3 `optional` is a synthetic oneof: shown as the label, not as a oneof.
    const inOneof = isFieldSet(field, FieldDescriptorProtoSchema.field.oneofIndex) && !field.proto3Optional;
    const oneof = inOneof ? ` oneof ${message.oneofDecl[field.oneofIndex]?.name}` : '';
    lines.push(`message ${name} field ${field.number} ${label}${renderType(field.type, field.typeName)} ${field.name}${oneof}`);
  }
  for (const nested of message.enumType) {
    for (const value of nested.value) lines.push(`enum ${name}.${nested.name} ${value.name} = ${value.number}`);
  }
  for (const nested of message.nestedType) renderMessage(nested, `${name}.`, lines);
}

export function contractFingerprint(file: FileDescriptorProto): string[] {
  const lines = [`package ${file.package}`];
  for (const enumType of file.enumType) {
    for (const value of enumType.value) lines.push(`enum ${enumType.name} ${value.name} = ${value.number}`);
  }
  for (const message of file.messageType) renderMessage(message, '', lines);
  for (const service of file.service) {
    for (const method of service.method) {
      const kind = `${method.clientStreaming ? 'client-stream' : 'unary-in'} ${method.serverStreaming ? 'server-stream' : 'unary-out'}`;
      lines.push(`service ${file.package}.${service.name} rpc ${method.name}(${method.inputType}) returns (${method.outputType}) ${kind}`);
    }
  }
  return lines.sort();
}
