import NIOCore

/// Writes commands as RESP arrays of bulk strings (`*N\r\n$len\r\narg\r\n...`),
/// the only request form Redis needs; byte-for-byte what `redisFormatCommandArgv` produces.
public enum RESPCommandEncoder {
    /// Appends one command to `buffer`.
    public static func encode(_ arguments: [String], into buffer: inout ByteBuffer) {
        buffer.writeStaticString("*")
        writeDecimal(arguments.count, into: &buffer)
        for argument in arguments {
            buffer.writeStaticString("$")
            writeDecimal(argument.utf8.count, into: &buffer)
            buffer.writeString(argument)
            buffer.writeStaticString("\r\n")
        }
    }

    private static func writeDecimal(_ value: Int, into buffer: inout ByteBuffer) {
        if value < 10 {
            buffer.writeInteger(UInt8(ascii: "0") + UInt8(value))
        } else {
            buffer.writeString(String(value))
        }
        buffer.writeStaticString("\r\n")
    }
}
