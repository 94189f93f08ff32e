/// The demo clinic's staff: what `chatctl seed-demo` creates and what tests log in as.
public enum DemoAccounts {
    public static let all: [(email: String, name: String, role: Role)] = [
        ("admin@clinic.com", "Alex Morgan", .admin),
        ("admin2@clinic.com", "Priya Raman", .admin),
        ("doctor@clinic.com", "Dr. Sarah Kim", .doctor),
        ("dr.patel@clinic.com", "Dr. Ravi Patel", .doctor),
        ("dr.okafor@clinic.com", "Dr. Ada Okafor", .doctor),
        ("dr.novak@clinic.com", "Dr. Jan Novak", .doctor),
        ("dr.garcia@clinic.com", "Dr. Lucia Garcia", .doctor),
    ]
}
